"""The scheduler: every thread is a coroutine; a spawn suspends it inside a task group of its children.

Semantics, stated once:

* A thread repeatedly sends its context to the backend and streams the reply. When the reply ends, the
  dialect says whether it is a spawn or the end of the thread.
* On a spawn the scheduler grants as many children as the budget allows (maybe none), runs them
  concurrently in an `asyncio.TaskGroup` owned by the parent, and waits for all of them: leaving the group is
  the join. The dialect then builds the parent's next context from every child's outcome.
* A child that fails is recorded and reported to its parent as failed; it does not fail its siblings.
  Cancelling a thread (deadline, caller) cancels its whole subtree; nothing is orphaned.
* Token events stream to the `EventStream` as they arrive; the trace is the runtime's record of the tree.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable

from spawnjoin._exceptions import BackendError, ContextWindowExceeded
from spawnjoin.backends.base import Backend, Finish, GenerationRequest, SamplingParams
from spawnjoin.budget import Budget
from spawnjoin.dialects.base import ChildOutcome, Dialect, Done, Spawn
from spawnjoin.events import (
    CallFinished,
    CallStarted,
    EventStream,
    Joined,
    Spawned,
    ThreadFinished,
    ThreadStarted,
    TokensGenerated,
)
from spawnjoin.trace import CallTrace, SpawnTrace, ThreadTrace, Trace

__all__ = ["Scheduler"]


class _TokenBudgetReached(Exception):
    """Internal: the solve's total-token budget ran out while a call streamed."""


class Scheduler:
    """Runs one solve: the root thread and every thread it spawns.

    Args:
        backend: Where tokens come from.
        dialect: How spawn/join look in text.
        budget: Limits of the solve.
        sampling: Base sampling options (stop strings and max_tokens are set per request).
        events: Where runtime events go.
        clock: Monotonic clock in seconds (injectable for tests).
    """

    def __init__(
        self,
        backend: Backend,
        dialect: Dialect,
        budget: Budget,
        sampling: SamplingParams,
        events: EventStream,
        *,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.backend = backend
        self.dialect = dialect
        self.budget = budget
        self.sampling = sampling
        self.events = events
        self._clock = clock
        self._t0 = clock()
        self._solve_id = uuid.uuid4().hex[:12]
        self._threads_started = 0
        self._total_tokens = 0
        self._window: int | None = budget.context_window
        self._window_known = budget.context_window is not None
        self._requests = asyncio.Semaphore(budget.max_concurrency) if budget.max_concurrency else None
        self._seed_counter = itertools.count()
        self.trace = Trace(
            root_id="0",
            threads={},
            dialect=dialect.name,
            backend=getattr(backend, "name", type(backend).__name__),
        )

    def now(self) -> float:
        """Seconds since the solve started."""
        return self._clock() - self._t0

    # -- threads -------------------------------------------------------------------------------------

    def new_thread(self, thread_id: str, prompt: str, *, parent: ThreadTrace | None, label: str) -> ThreadTrace:
        """Create and register a thread record (not yet running)."""
        record = ThreadTrace(
            id=thread_id,
            parent_id=parent.id if parent else None,
            depth=parent.depth + 1 if parent else 0,
            label=label,
            prompt=prompt,
        )
        self.trace.threads[thread_id] = record
        self._threads_started += 1
        return record

    async def run_thread(self, record: ThreadTrace, affinity: str) -> None:
        """Run one thread to its end, recording its status; raises only `CancelledError`."""
        record.status = "running"
        record.started_at = self.now()
        self.events.emit(
            ThreadStarted(record.id, record.parent_id, record.depth, record.label, record.prompt, record.started_at)
        )
        try:
            await self._thread_body(record, affinity)
        except asyncio.CancelledError:
            self._finish(record, "cancelled", record.reason or "cancelled")
            raise
        except BackendError as exc:
            record.error = f"{type(exc).__name__}: {exc}"
            self._finish(record, "failed", record.error)
        except Exception as exc:  # a bug or an unexpected backend failure: record it, keep the tree
            record.error = f"{type(exc).__name__}: {exc}"
            self._finish(record, "failed", record.error)
        else:
            self._finish(record, "done", record.reason)

    def _finish(self, record: ThreadTrace, status: str, reason: str | None) -> None:
        record.status = status  # type: ignore[assignment]
        record.reason = reason
        record.finished_at = self.now()
        if status == "done":
            record.result = self.dialect.child_result(record.generated)
        self.events.emit(ThreadFinished(record.id, status, reason, record.finished_at))

    async def _thread_body(self, record: ThreadTrace, affinity: str) -> None:
        context = record.prompt
        child_counter = itertools.count()
        while True:
            call = await self._call(record, context, affinity)
            decision = self.dialect.after_call(context, call.text, call.finish_reason or "eos")
            if isinstance(decision, Done):
                limit = self.budget.max_total_tokens
                if call.finish_reason == "length" and limit is not None and self._total_tokens >= limit:
                    record.reason = f"token budget exhausted (max_total_tokens={limit})"
                else:
                    record.reason = decision.reason
                    record.malformed = decision.malformed
                return
            outcomes = await self._spawn(record, decision, child_counter, affinity)
            context = self.dialect.join(context, call.text, decision, outcomes)
            record.spawns[-1].join_text = context
            record.status = "running"
            self.events.emit(Joined(record.id, context, self.now()))

    # -- spawn / join --------------------------------------------------------------------------------

    def _grant(self, record: ThreadTrace, requested: int) -> tuple[int, str | None]:
        b = self.budget
        if record.depth + 1 > b.max_depth:
            return 0, f"depth budget: max_depth={b.max_depth}"
        granted, notes = requested, []
        if granted > b.max_children:
            granted = b.max_children
            notes.append(f"max_children={b.max_children}")
        room = b.max_threads - self._threads_started
        if granted > room:
            granted = max(room, 0)
            notes.append(f"max_threads={b.max_threads}")
        if b.max_total_tokens is not None and self._total_tokens >= b.max_total_tokens:
            granted = 0
            notes.append(f"max_total_tokens={b.max_total_tokens}")
        note = None if granted == requested else f"granted {granted} of {requested} ({', '.join(notes)})"
        return granted, note

    async def _spawn(
        self, record: ThreadTrace, spawn: Spawn, counter: itertools.count[int], affinity: str
    ) -> list[ChildOutcome]:
        requested = len(spawn.children)
        granted, note = self._grant(record, requested)
        children: list[ThreadTrace] = []
        for spec in spawn.children[:granted]:
            child_id = f"{record.id}.{next(counter)}"
            children.append(self.new_thread(child_id, spec.prompt, parent=record, label=spec.label))
        record.spawns.append(
            SpawnTrace(after_call=len(record.calls) - 1, requested=requested,
                       children=[c.id for c in children], note=note)
        )
        record.status = "waiting"
        self.events.emit(Spawned(record.id, tuple(c.id for c in children), requested, note, self.now()))
        if children:
            # Children never raise except CancelledError (failures are recorded on their records), so
            # gather gives TaskGroup's structure on 3.10 too: cancelling the parent cancels every child.
            await asyncio.gather(
                *(
                    self.run_thread(c, affinity if self.dialect.shares_prefix else f"{self._solve_id}:{c.id}")
                    for c in children
                )
            )
        outcomes = []
        for index, spec in enumerate(spawn.children):
            if index < len(children):
                child = children[index]
                outcomes.append(
                    ChildOutcome(
                        index=index,
                        label=spec.label,
                        status=child.status if child.status in ("done", "failed", "cancelled") else "failed",
                        prompt=child.prompt,
                        text=child.generated,
                        result=child.result,
                        reason=child.reason,
                    )
                )
            else:
                outcomes.append(
                    ChildOutcome(index=index, label=spec.label, status="skipped", prompt=spec.prompt,
                                 reason=note)
                )
        return outcomes

    # -- one backend request -------------------------------------------------------------------------

    async def _max_tokens(self, context: str) -> tuple[int | None, int | None]:
        """(prompt_tokens, max_tokens) for a request continuing `context`, sized to every limit."""
        if not self._window_known:
            self._window = await self.backend.context_window()
            self._window_known = True
        prompt_tokens = await self.backend.count_tokens(context)
        limits = [x for x in (self.sampling.max_tokens, self.budget.max_tokens_per_call) if x is not None]
        if self._window is not None and prompt_tokens is not None:
            room = self._window - prompt_tokens
            if room < 1:
                raise ContextWindowExceeded(
                    f"the thread's context ({prompt_tokens} tokens) fills the {self._window}-token context "
                    "window; raise Budget.context_window or let threads write less before spawning"
                )
            limits.append(room)
        if self.budget.max_total_tokens is not None:
            limits.append(max(1, self.budget.max_total_tokens - self._total_tokens))
        return prompt_tokens, (min(limits) if limits else None)

    async def _call(self, record: ThreadTrace, context: str, affinity: str) -> CallTrace:
        if self.budget.max_total_tokens is not None and self._total_tokens >= self.budget.max_total_tokens:
            # Record an empty call so the thread's transcript and the dialect see a finished request.
            call = CallTrace(context=context, finish_reason="length", started_at=self.now(), finished_at=self.now())
            record.calls.append(call)
            return call
        prompt_tokens, max_tokens = await self._max_tokens(context)
        params = self.sampling.model_copy(
            update={
                "stop": self.dialect.stop_strings(context),
                "max_tokens": max_tokens,
                "seed": None if self.sampling.seed is None else self.sampling.seed + next(self._seed_counter),
            }
        )
        index = len(record.calls)
        call = CallTrace(context=context, prompt_tokens=prompt_tokens, started_at=self.now())
        record.calls.append(call)
        request = GenerationRequest(
            prompt=context,
            params=params,
            request_id=f"{self._solve_id}-{record.id}-{index}",
            thread_id=record.id,
            affinity=affinity,
        )
        self.events.emit(CallStarted(record.id, index, prompt_tokens, max_tokens, call.started_at))
        if self._requests is not None:
            async with self._requests:
                finish = await self._stream(record, call, request)
        else:
            finish = await self._stream(record, call, request)
        call.finished_at = self.now()
        call.finish_reason = finish.reason
        call.matched_stop = finish.matched_stop
        if finish.reason == "stop" and finish.matched_stop:
            call.text += finish.matched_stop
        if finish.completion_tokens is not None:
            self._total_tokens += finish.completion_tokens - call.completion_tokens
            call.completion_tokens = finish.completion_tokens
        if finish.prompt_tokens is not None:
            call.prompt_tokens = finish.prompt_tokens
        call.cached_tokens = finish.cached_tokens
        if finish.token_ids is not None:
            call.token_ids = list(finish.token_ids)
        self.events.emit(
            CallFinished(record.id, index, finish.reason, finish.matched_stop, call.completion_tokens,
                         finish.cached_tokens, call.finished_at)
        )
        return call

    async def _stream(self, record: ThreadTrace, call: CallTrace, request: GenerationRequest) -> Finish:
        # The hot path: one iteration per streamed chunk. Counters stay in locals (pydantic attribute
        # writes cost ~1 µs each); only the solve-wide total is shared, for the token budget.
        pieces: list[str] = []
        append = pieces.append
        finish: Finish | None = None
        limit = self.budget.max_total_tokens
        emit = self.events.emit
        now = self.now
        tid = record.id
        generated = 0
        stream = self.backend.stream(request)
        try:
            async for item in stream:
                if type(item) is Finish:
                    finish = item
                    break
                append(item.text)  # type: ignore[union-attr]
                tokens = item.tokens or 1  # type: ignore[union-attr]
                generated += tokens
                self._total_tokens += tokens
                emit(TokensGenerated(tid, item.text, tokens, now()))  # type: ignore[union-attr]
                if limit is not None and self._total_tokens >= limit:
                    finish = Finish(reason="length", completion_tokens=generated)
                    break
        finally:
            call.text = "".join(pieces)
            call.completion_tokens = generated
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        if finish is None:
            raise BackendError(f"{self.trace.backend}: the stream ended without a finish reason",
                               request_id=request.request_id, retryable=True)
        return finish
