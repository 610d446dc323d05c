"""Turn a saved `Trace` back into the runtime events that would have produced it.

The view only ever renders from events, so a trace is shown (`spawnjoin show`) or replayed by regenerating
its events here and applying them to a `ViewState`. Each call's text can be cut into several
`TokensGenerated` events spread evenly over the call's duration, so a replay streams like the original.
"""

from __future__ import annotations

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
from spawnjoin.trace import CallTrace, ThreadTrace, Trace

__all__ = ["trace_events"]

_FINAL = ("done", "failed", "cancelled")


def _split(call: CallTrace, thread_id: str, pieces: int) -> list[TokensGenerated]:
    """`call`'s text as up to `pieces` token events, evenly spaced between its start and end."""
    text, tokens = call.text, call.completion_tokens
    if not text and tokens <= 0:
        return []
    n = max(1, min(pieces, len(text) or 1, tokens or 1))
    start = call.started_at
    end = call.finished_at if call.finished_at is not None else start
    out = []
    for i in range(n):
        piece = text[len(text) * i // n : len(text) * (i + 1) // n]
        count = tokens * (i + 1) // n - tokens * i // n
        out.append(TokensGenerated(thread_id, piece, count, start + (end - start) * (i + 1) / n))
    return out


def _thread_events(thread: ThreadTrace, trace: Trace, pieces: int) -> list[Event]:
    events: list[Event] = [
        ThreadStarted(
            thread.id, thread.parent_id, thread.depth, thread.label, thread.prompt, thread.started_at
        )
    ]
    spawns_after: dict[int, list[int]] = {}
    for k, spawn in enumerate(thread.spawns):
        spawns_after.setdefault(spawn.after_call, []).append(k)
    for index, call in enumerate(thread.calls):
        end = call.finished_at if call.finished_at is not None else call.started_at
        events.append(CallStarted(thread.id, index, call.prompt_tokens, None, call.started_at))
        events.extend(_split(call, thread.id, pieces))
        if call.finished_at is not None:
            events.append(
                CallFinished(
                    thread.id,
                    index,
                    call.finish_reason or "",
                    call.matched_stop,
                    call.completion_tokens,
                    call.cached_tokens,
                    end,
                )
            )
        for k in spawns_after.get(index, []):
            spawn = thread.spawns[k]
            events.append(Spawned(thread.id, tuple(spawn.children), spawn.requested, spawn.note, end))
            if spawn.join_text is None:
                continue
            if index + 1 < len(thread.calls):
                joined_at = thread.calls[index + 1].started_at
            else:
                ends = [trace.threads[c].finished_at for c in spawn.children if c in trace.threads]
                joined_at = max([e for e in ends if e is not None], default=end)
            events.append(Joined(thread.id, spawn.join_text, joined_at))
    if thread.status in _FINAL:
        finished = thread.finished_at if thread.finished_at is not None else thread.started_at
        events.append(ThreadFinished(thread.id, thread.status, thread.reason, finished))
    return events


def trace_events(trace: Trace, *, pieces_per_call: int = 1) -> list[Event]:
    """The events that describe `trace`, in time order.

    Args:
        trace: A saved or in-memory trace (a partial trace gives the events up to where it stopped).
        pieces_per_call: Most `TokensGenerated` events per call (1: each call's text in one event).
            Defaults to 1.

    Returns:
        Every event, sorted by time; events at the same time keep tree order (parents first).
    """
    events: list[Event] = []
    for thread in trace.walk():
        events.extend(_thread_events(thread, trace, max(1, pieces_per_call)))
    if trace.finished_at is not None and trace.status != "running":
        # A trace does not store the answer (the `SolveResult` does), so the replayed end carries none.
        events.append(SolveFinished(trace.status, None, trace.finished_at))
    # A stable sort keeps each thread's own order when timestamps tie.
    events.sort(key=lambda e: e.time)
    return events
