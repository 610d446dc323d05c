"""`ViewState`: an event-sourced snapshot of a solve's thread tree, for views to render.

The state is built only by applying runtime events (`ViewState.apply`); it never reads runtime internals, so
a live solve, a replayed trace and a hand-written event list all render the same way. It imports no
rendering library: `spawnjoin.view.tree` turns a snapshot into text.

Token counts: while a call streams, a thread's count grows by each `TokensGenerated.tokens` (a chunk that
reports 0 counts as 1 token, an estimate); when the call finishes, `CallFinished.completion_tokens` replaces
the estimate. Tokens per second are measured over the time a thread spent decoding (inside calls), so a
parent waiting on its children keeps the rate it decoded at.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from spawnjoin.events import (
    CallFinished,
    CallStarted,
    Event,
    Joined,
    SolveFinished,
    Spawned,
    ThreadFinished,
    ThreadStarted,
    TokensGenerated,
)

if TYPE_CHECKING:
    from spawnjoin.trace import Trace

__all__ = ["ThreadView", "Totals", "ViewState", "TAIL_CHARS", "ACTIVE_STATES", "FINAL_STATES"]

TAIL_CHARS = 160
"""How many trailing characters of a thread's output the state keeps (its "last words")."""

ACTIVE_STATES = frozenset({"pending", "running", "waiting"})
"""States of a thread that has not ended."""

FINAL_STATES = frozenset({"done", "failed", "cancelled"})
"""States of a thread that has ended."""


@dataclass(slots=True)
class ThreadView:
    """What the view knows about one thread (mutated only by `ViewState.apply`).

    Attributes:
        id: The thread's id.
        parent_id: Its parent's id (None for the root).
        depth: Spawn depth (the root is 0).
        label: Its label, as the spawn named it.
        state: `pending` (named by a spawn, not started yet), `running`, `waiting` (on its children),
            `done`, `failed` or `cancelled`.
        tokens: Tokens generated so far (see the module docstring for how streaming counts are estimated).
        calls: Backend calls started.
        tail: The last `TAIL_CHARS` characters the thread generated.
        reason: Why the thread ended (None for a normal end).
        started_at: Event time the thread started.
        finished_at: Event time it ended (None while active).
        decode_time: Seconds spent inside finished calls.
        call_started_at: Start of the call in flight (None when no call is streaming).
        streamed: Tokens streamed in the call in flight.
        prompt_tokens: Prompt tokens over every call, where the backend reported them.
        cached_tokens: Prompt tokens served from a prefix cache, summed (None when never reported).
        children: Child ids in spawn order.
        spawns: Child ids grouped by spawn (for the sequential-token count).
    """

    id: str
    parent_id: str | None = None
    depth: int = 0
    label: str = ""
    state: str = "pending"
    tokens: int = 0
    calls: int = 0
    tail: str = ""
    reason: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    decode_time: float = 0.0
    call_started_at: float | None = None
    streamed: int = 0
    prompt_tokens: int = 0
    cached_tokens: int | None = None
    children: list[str] = field(default_factory=list)
    spawns: list[tuple[str, ...]] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The label, or the id when the label is empty."""
        return self.label or self.id

    @property
    def active(self) -> bool:
        """Whether the thread has not ended yet."""
        return self.state in ACTIVE_STATES

    def decoding_seconds(self, now: float) -> float:
        """Seconds spent decoding up to `now` (finished calls plus the call in flight)."""
        if self.call_started_at is None:
            return self.decode_time
        return self.decode_time + max(0.0, now - self.call_started_at)

    def tokens_per_second(self, now: float) -> float | None:
        """Decoding speed up to `now`, or None before any decoding time has passed."""
        seconds = self.decoding_seconds(now)
        if seconds <= 0.0:
            return None
        return self.tokens / seconds


@dataclass(slots=True, frozen=True)
class Totals:
    """Footer figures of a snapshot.

    Attributes:
        threads: Threads started (the root included).
        running: Threads decoding or about to.
        waiting: Threads waiting on children.
        failed: Threads that failed.
        cancelled: Threads that were cancelled.
        total_tokens: Tokens generated over every thread.
        sequential_tokens: Tokens on the critical path (as `spawnjoin.trace.Metrics` defines it).
        elapsed: Seconds from the first event to `now` (or to the end of the solve).
        prompt_tokens: Prompt tokens over every call, where reported.
        cached_tokens: Prompt tokens served from a prefix cache (None when never reported).
    """

    threads: int
    running: int
    waiting: int
    failed: int
    cancelled: int
    total_tokens: int
    sequential_tokens: int
    elapsed: float
    prompt_tokens: int
    cached_tokens: int | None

    @property
    def cache_reuse(self) -> float | None:
        """Fraction of prompt tokens served from the prefix cache, when both figures are known."""
        if self.cached_tokens is None or self.prompt_tokens <= 0:
            return None
        return self.cached_tokens / self.prompt_tokens


class ViewState:
    """The thread tree as the events so far describe it.

    Apply events in the order the runtime emitted them; out-of-order structure is tolerated (a spawn may
    name a child before the child's `ThreadStarted` arrives: it shows as `pending`).

    Attributes:
        threads: Every thread by id, in the order first seen.
        root_id: The first thread without a parent (None before any event).
        started_at: Time of the first event.
        now: Time of the latest event.
        status: `running` until `SolveFinished`, then the solve's status.
        answer: The solve's answer, once finished.
        finished_at: Time the solve ended (None while it runs).
        events: Number of events applied.
    """

    def __init__(self) -> None:
        self.threads: dict[str, ThreadView] = {}
        self.root_id: str | None = None
        self.started_at: float | None = None
        self.now: float = 0.0
        self.status: str = "running"
        self.answer: str | None = None
        self.finished_at: float | None = None
        self.events = 0
        self._handlers: dict[type, Callable[[Any], None]] = {
            TokensGenerated: self._tokens,
            ThreadStarted: self._thread_started,
            CallStarted: self._call_started,
            CallFinished: self._call_finished,
            Spawned: self._spawned,
            Joined: self._joined,
            ThreadFinished: self._thread_finished,
            SolveFinished: self._solve_finished,
        }

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> ViewState:
        """A state with every event of `events` applied, in order."""
        state = cls()
        state.apply_all(events)
        return state

    @classmethod
    def from_trace(cls, trace: Trace) -> ViewState:
        """The final snapshot of a saved trace (its events replayed through `apply`)."""
        from spawnjoin.view.timeline import trace_events

        return cls.from_events(trace_events(trace))

    def apply(self, event: Event) -> None:
        """Update the snapshot with one event (unknown event types are ignored)."""
        handler = self._handlers.get(type(event))
        if handler is None:
            return
        self.events += 1
        time = event.time
        if self.started_at is None:
            self.started_at = time
        if time > self.now:
            self.now = time
        handler(event)

    def apply_all(self, events: Iterable[Event]) -> None:
        """Apply every event of `events`, in order (same result as calling `apply` on each, but faster).

        Token events, the bulk of any stream, are handled inline, and each thread's new text is joined onto
        its tail once per batch rather than once per event.
        """
        apply, threads = self.apply, self.threads
        pieces: dict[str, list[str]] = {}
        for event in events:
            if type(event) is not TokensGenerated:
                apply(event)
                continue
            self.events += 1
            time = event.time
            if self.started_at is None:
                self.started_at = time
            if time > self.now:
                self.now = time
            thread = threads.get(event.thread_id)
            if thread is None:
                thread = self._thread(event.thread_id)
            count = event.tokens or (1 if event.text else 0)
            thread.tokens += count
            thread.streamed += count
            if event.text:
                if thread.id in pieces:
                    pieces[thread.id].append(event.text)
                else:
                    pieces[thread.id] = [event.text]
        for thread_id, texts in pieces.items():
            thread = threads[thread_id]
            thread.tail = (thread.tail + "".join(texts))[-TAIL_CHARS:]

    # -- queries -------------------------------------------------------------------------------------

    @property
    def root(self) -> ThreadView | None:
        """The root thread, once started."""
        return self.threads.get(self.root_id) if self.root_id is not None else None

    @property
    def finished(self) -> bool:
        """Whether `SolveFinished` was applied."""
        return self.finished_at is not None

    def walk(self) -> list[ThreadView]:
        """Every thread reachable from the root, depth first, children in spawn order; then any orphan."""
        out: list[ThreadView] = []
        seen: set[str] = set()
        roots = [self.root_id] if self.root_id is not None else []
        roots += [
            t.id for t in self.threads.values() if t.parent_id not in self.threads and t.id not in roots
        ]
        stack = list(reversed(roots))
        while stack:
            tid = stack.pop()
            if tid in seen or tid not in self.threads:
                continue
            seen.add(tid)
            thread = self.threads[tid]
            out.append(thread)
            stack.extend(reversed(thread.children))
        return out

    def elapsed(self, now: float | None = None) -> float:
        """Seconds from the first event to the end of the solve, else to `now` (default: the latest event)."""
        if self.started_at is None:
            return 0.0
        end = self.finished_at if self.finished_at is not None else (self.now if now is None else now)
        return max(0.0, end - self.started_at)

    def sequential_tokens(self) -> int:
        """Critical-path tokens: own tokens plus, per spawn, the largest child's sequential tokens."""
        memo: dict[str, int] = {}
        # Post-order without recursion: a deep tree must not hit Python's recursion limit.
        for thread in reversed(self.walk()):
            total = thread.tokens
            for group in thread.spawns:
                total += max((memo.get(c, 0) for c in group), default=0)
            memo[thread.id] = total
        return memo.get(self.root_id, 0) if self.root_id is not None else 0

    def totals(self, now: float | None = None) -> Totals:
        """Footer figures at `now` (default: the latest event)."""
        started = [t for t in self.threads.values() if t.state != "pending"]
        cached = [t.cached_tokens for t in started if t.cached_tokens is not None]
        return Totals(
            threads=len(started),
            running=sum(t.state == "running" for t in started),
            waiting=sum(t.state == "waiting" for t in started),
            failed=sum(t.state == "failed" for t in started),
            cancelled=sum(t.state == "cancelled" for t in started),
            total_tokens=sum(t.tokens for t in started),
            sequential_tokens=self.sequential_tokens(),
            elapsed=self.elapsed(now),
            prompt_tokens=sum(t.prompt_tokens for t in started),
            cached_tokens=sum(cached) if cached else None,
        )

    # -- event handlers ------------------------------------------------------------------------------

    def _thread(self, thread_id: str) -> ThreadView:
        thread = self.threads.get(thread_id)
        if thread is None:
            thread = self.threads[thread_id] = ThreadView(thread_id)
        return thread

    def _tokens(self, event: TokensGenerated) -> None:
        thread = self._thread(event.thread_id)
        count = event.tokens or (1 if event.text else 0)
        thread.tokens += count
        thread.streamed += count
        if event.text:
            thread.tail = (thread.tail + event.text)[-TAIL_CHARS:]

    def _thread_started(self, event: ThreadStarted) -> None:
        thread = self._thread(event.thread_id)
        thread.parent_id = event.parent_id
        thread.depth = event.depth
        thread.label = event.label
        thread.state = "running"
        thread.started_at = event.time
        if event.parent_id is None:
            if self.root_id is None:
                self.root_id = thread.id
        else:
            parent = self._thread(event.parent_id)
            if thread.id not in parent.children:
                parent.children.append(thread.id)

    def _call_started(self, event: CallStarted) -> None:
        thread = self._thread(event.thread_id)
        thread.calls += 1
        thread.state = "running"
        thread.call_started_at = event.time
        thread.streamed = 0
        if event.prompt_tokens is not None:
            thread.prompt_tokens += event.prompt_tokens

    def _end_call(self, thread: ThreadView, time: float) -> None:
        if thread.call_started_at is not None:
            thread.decode_time += max(0.0, time - thread.call_started_at)
            thread.call_started_at = None
        thread.streamed = 0

    def _call_finished(self, event: CallFinished) -> None:
        thread = self._thread(event.thread_id)
        if event.completion_tokens > 0:
            # The backend's count is authoritative; drop this call's streaming estimate.
            thread.tokens += event.completion_tokens - thread.streamed
        if event.cached_tokens is not None:
            thread.cached_tokens = (thread.cached_tokens or 0) + event.cached_tokens
        self._end_call(thread, event.time)

    def _spawned(self, event: Spawned) -> None:
        thread = self._thread(event.thread_id)
        thread.spawns.append(event.child_ids)
        thread.state = "waiting"
        for child_id in event.child_ids:
            child = self._thread(child_id)
            child.parent_id = thread.id
            child.depth = thread.depth + 1
            if child_id not in thread.children:
                thread.children.append(child_id)

    def _joined(self, event: Joined) -> None:
        thread = self._thread(event.thread_id)
        if thread.active:
            thread.state = "running"

    def _thread_finished(self, event: ThreadFinished) -> None:
        thread = self._thread(event.thread_id)
        self._end_call(thread, event.time)
        thread.state = event.status if event.status in FINAL_STATES else "failed"
        thread.reason = event.reason
        thread.finished_at = event.time

    def _solve_finished(self, event: SolveFinished) -> None:
        self.status = event.status
        self.answer = event.answer
        self.finished_at = event.time
