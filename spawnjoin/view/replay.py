"""Show a saved trace: its final thread tree at once (`print_trace`), or replayed live (`replay`)."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.text import Text

from spawnjoin.trace import Trace
from spawnjoin.view.live import LiveView
from spawnjoin.view.state import ViewState
from spawnjoin.view.timeline import trace_events
from spawnjoin.view.tree import ThreadTreeView

__all__ = ["print_trace", "replay", "trace_header"]

REPLAY_PIECES_PER_CALL = 32
"""Token events each call is cut into when replayed, so its text appears gradually."""


def trace_header(trace: Trace) -> Text:
    """One line naming the trace's dialect, backend and status, plus its error when it has one."""
    parts = [f"dialect {trace.dialect or '?'}", f"backend {trace.backend or '?'}", f"status {trace.status}"]
    header = Text(" · ".join(parts), style="dim")
    if trace.error:
        header.append("\nerror: ", style="bold red")
        header.append(trace.error, style="red")
    return header


def print_trace(trace: Trace, console: Console | None = None) -> None:
    """Print `trace`'s header and final thread tree with its totals.

    Args:
        trace: The trace to show.
        console: Where to print. Defaults to a new `Console` on stdout.
    """
    console = console if console is not None else Console()
    console.print(trace_header(trace))
    console.print(ThreadTreeView(ViewState.from_trace(trace)))
    if trace.answer is not None:
        console.print(Text("answer: ", style="bold") + Text(trace.answer))


def replay(
    trace: Trace,
    *,
    speed: float = 1.0,
    console: Console | None = None,
    refresh_per_second: float = 8.0,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
) -> LiveView:
    """Play `trace` back through a `LiveView`, at `speed` times its recorded pace.

    Args:
        trace: The trace to replay.
        speed: Playback speed (2.0 plays twice as fast). Defaults to 1.0.
        console: Where to draw. Defaults to a new `Console` on stdout.
        refresh_per_second: Redraws per second. Defaults to 8.
        clock: Real-time clock in seconds. Defaults to `time.perf_counter`.
        sleep: How to wait between events. Defaults to `time.sleep`.

    Returns:
        The stopped view (its `state` is the trace's final snapshot).
    """
    if speed <= 0:
        raise ValueError(f"speed must be positive, got {speed}")
    console = console if console is not None else Console()
    events = trace_events(trace, pieces_per_call=REPLAY_PIECES_PER_CALL)
    origin = events[0].time if events else 0.0
    real_start = clock()

    def trace_time() -> float:
        return origin + (clock() - real_start) * speed

    console.print(trace_header(trace))
    view = LiveView(console=console, refresh_per_second=refresh_per_second, clock=trace_time)
    with view:
        for event in events:
            wait = (event.time - trace_time()) / speed
            if wait > 0:
                sleep(wait)
            view.push(event)
    return view
