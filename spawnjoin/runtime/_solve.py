"""`solve()` and `solve_sync()`: the public entry points."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spawnjoin._exceptions import ConfigError
from spawnjoin.backends.base import Backend, SamplingParams
from spawnjoin.budget import Budget
from spawnjoin.dialects import Dialect, get_dialect
from spawnjoin.events import Event, EventStream, SolveFinished
from spawnjoin.result import SolveResult, SolveStatus
from spawnjoin.runtime._scheduler import Scheduler
from spawnjoin.tasks.base import Task, get_task
from spawnjoin.trace import compute_metrics

__all__ = ["solve", "solve_sync"]


async def solve(
    prompt: str,
    *,
    backend: Backend | None = None,
    dialect: str | Dialect = "apr",
    budget: Budget | None = None,
    sampling: SamplingParams | None = None,
    task: str | Task | None = None,
    events: EventStream | None = None,
    on_event: Callable[[Event], None] | None = None,
    trace_path: str | Path | None = None,
) -> SolveResult:
    """Solve `prompt` with adaptive parallel reasoning and return the answer, the thread tree and metrics.

    Args:
        prompt: The problem. A `task` may rewrite it into the model's prompt format.
        backend: Where tokens come from. None: the embedded engine with the shipped Countdown model (loaded
            for this call and closed after it; pass a backend to reuse one across solves).
        dialect: `"apr"`, `"threadweaver"`, or a `Dialect` instance.
        budget: Limits (threads, depth, tokens, context window, deadline, concurrency). Defaults to `Budget()`.
        sampling: Sampling options; stop strings and max_tokens are managed per request. Defaults to greedy.
        task: A task (`"countdown"` or a `Task`) that formats the prompt and extracts/verifies the answer.
        events: An `EventStream` to publish runtime events on (the live view subscribes to it).
        on_event: Shortcut: a synchronous hook called with every event.
        trace_path: When given, the trace is written there as JSON at the end, whatever the outcome
            (including cancellation).

    Returns:
        A `SolveResult`. A deadline, a failed root or a budget never raise: the status says what happened
        and the partial trace is attached. Cancelling the calling task cancels the whole tree, writes the
        trace to `trace_path` if given, and re-raises `CancelledError`.
    """
    budget = budget or Budget()
    sampling = sampling or SamplingParams()
    the_dialect = get_dialect(dialect)
    the_task = get_task(task) if task is not None else None
    events = events or EventStream()
    if on_event is not None:
        events.add_hook(on_event)
    own_backend = backend is None
    if backend is None:
        backend = _default_backend()

    root_prompt = the_task.format_prompt(prompt) if the_task else prompt
    root_prompt = the_dialect.root_prompt(root_prompt, budget)
    scheduler = Scheduler(backend, the_dialect, budget, sampling, events)
    root = scheduler.new_thread("0", root_prompt, parent=None, label="root")
    status: SolveStatus = "done"
    error: str | None = None
    try:
        runner = scheduler.run_thread(root, affinity=f"{scheduler.trace.backend}:{id(scheduler)}")
        if budget.deadline is not None:
            try:
                await asyncio.wait_for(runner, timeout=budget.deadline)
            except asyncio.TimeoutError:
                status, error = "deadline", f"the {budget.deadline:g} s deadline passed; the tree is partial"
                _mark_unfinished(scheduler, "deadline")
        else:
            await runner
        if status == "done" and root.status != "done":
            status = "failed" if root.status == "failed" else "cancelled"
            error = root.error or root.reason
    except asyncio.CancelledError:
        _mark_unfinished(scheduler, "solve cancelled")
        _finalize(scheduler, "cancelled", "the solve was cancelled", trace_path)
        events.emit(SolveFinished("cancelled", None, scheduler.now()))
        events.close()
        raise
    finally:
        if own_backend:
            with contextlib.suppress(Exception):
                await backend.aclose()
    transcript = root.transcript
    answer = the_dialect.answer(root.generated) if root.calls else None
    if the_task is not None:
        answer = the_task.extract_answer(prompt, transcript, answer)
    scheduler.trace.answer = answer
    trace = _finalize(scheduler, status, error, trace_path)
    events.emit(SolveFinished(status, answer, scheduler.now()))
    events.close()
    return SolveResult(answer=answer, text=transcript, status=status, error=error, trace=trace)


def _mark_unfinished(scheduler: Scheduler, reason: str) -> None:
    for record in scheduler.trace.threads.values():
        if record.status in ("pending", "running", "waiting", "cancelled"):
            record.status = "cancelled"
            record.reason = reason
            if record.finished_at is None:
                record.finished_at = scheduler.now()


def _finalize(scheduler: Scheduler, status: str, error: str | None, trace_path: str | Path | None) -> Any:
    trace = scheduler.trace
    trace.finished_at = scheduler.now()
    trace.status = status
    trace.error = error
    trace.metrics = compute_metrics(trace)
    if trace_path is not None:
        trace.save(trace_path)
    return trace


def _default_backend() -> Backend:
    try:
        from spawnjoin.backends.embedded import EmbeddedBackend
    except ImportError as exc:  # torch/transformers missing
        raise ConfigError(
            "the default backend runs the shipped model in-process and needs the 'local' extra: "
            "pip install 'spawnjoin[local]' (or pass backend=OpenAICompletions(...))"
        ) from exc
    return EmbeddedBackend()


def solve_sync(prompt: str, **kwargs: Any) -> SolveResult:
    """`solve` for synchronous code: runs it in a new event loop (see `solve` for the arguments)."""
    return asyncio.run(solve(prompt, **kwargs))
