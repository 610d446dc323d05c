"""`LiveView`: a thread tree that redraws in the terminal while a solve runs.

Decoding must never wait for the screen, so the two sides share only a queue:

* `attach(stream)` installs the deque's `append` as an `EventStream` hook (`push` does the same by hand):
  queueing the event is the whole cost on the event loop's thread.
* rich's `Live` redraws from its own thread at `refresh_per_second`. Each redraw first drains the deque into
  the `ViewState`, then renders it; both happen under `Live`'s lock, so the state is only ever touched by
  one thread at a time.

Usage::

    events = EventStream()
    with LiveView(events):
        result = await solve(prompt, events=events)
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from rich.console import Console, RenderableType
from rich.live import Live

from spawnjoin.events import Event, EventStream
from spawnjoin.view.state import ViewState
from spawnjoin.view.tree import ThreadTreeView

__all__ = ["LiveView", "LiveStatistics", "DEFAULT_REFRESH_PER_SECOND"]

DEFAULT_REFRESH_PER_SECOND = 8.0
"""Redraws per second: smooth enough to read, rare enough to cost nothing measurable."""

_FOOTER_ROOM = 3  # lines kept free under the tree for the footer


@dataclass(slots=True, frozen=True)
class LiveStatistics:
    """Counters of a `LiveView`.

    Attributes:
        events_received: Events pushed so far.
        events_applied: Events drained into the state so far.
        renders: Times the renderable was built (each redraw builds it once).
    """

    events_received: int
    events_applied: int
    renders: int


class LiveView:
    """A live, throttled thread-tree display fed by runtime events.

    Args:
        events: A stream to attach to (its hook list gets `push`); None to call `push` yourself.
        console: Where to draw. Defaults to a new `Console` on stdout.
        refresh_per_second: Most redraws per second. Defaults to 8.
        max_rows: Most thread lines while live: `"auto"` fits the console height, None draws every
            thread. The final frame, drawn on `stop`, always shows every thread. Defaults to `"auto"`.
        transient: Erase the display on `stop` instead of leaving the final frame. Defaults to False.
        clock: Seconds on a clock running at the events' pace, used to advance the elapsed time and the
            speed of running threads between events. Defaults to `time.perf_counter`.
    """

    def __init__(
        self,
        events: EventStream | None = None,
        *,
        console: Console | None = None,
        refresh_per_second: float = DEFAULT_REFRESH_PER_SECOND,
        max_rows: int | Literal["auto"] | None = "auto",
        transient: bool = False,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.state = ViewState()
        self.console = console if console is not None else Console()
        self._pending: deque[Event] = deque()
        self._max_rows = max_rows
        self._clock = clock
        self._offset: float | None = None
        self._renders = 0
        self._final = False
        self._live = Live(
            console=self.console,
            refresh_per_second=refresh_per_second,
            transient=transient,
            get_renderable=self._renderable,
        )
        if events is not None:
            self.attach(events)

    def attach(self, events: EventStream) -> None:
        """Receive every event `events` emits from now on."""
        # The hook is the deque's own append: no Python frame per event on the decoding hot path.
        events.add_hook(self._pending.append)

    def push(self, event: Event) -> None:
        """Queue one event for the next redraw (cheap: safe to call on the decoding hot path)."""
        self._pending.append(event)

    def start(self) -> None:
        """Start drawing (also done by entering the `with` block)."""
        self._final = False
        self._live.start(refresh=True)

    def stop(self) -> None:
        """Apply every queued event, draw the final frame with every thread, and stop."""
        self._final = True
        was_started = self._live.is_started
        self._live.stop()
        if was_started and not self._live.transient and not self.console.is_terminal:
            # rich ends a terminal's final frame with a newline but not a file's.
            self.console.line()

    def __enter__(self) -> LiveView:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def statistics(self) -> LiveStatistics:
        """Event and redraw counters (read them after `stop` for exact figures)."""
        applied = self.state.events
        return LiveStatistics(applied + len(self._pending), applied, self._renders)

    def drain(self) -> None:
        """Apply every queued event to `state` (redraws do this; call it only while the view is stopped)."""
        pending = self._pending
        # Only what is queued now: the event loop may append more while this runs.
        batch = [pending.popleft() for _ in range(len(pending))]
        if batch:
            self.state.apply_all(batch)
            # Map the events' clock onto ours so time keeps moving between events. An event is drained after
            # it happened, so each estimate is a lower bound of the offset: keep the largest.
            offset = batch[-1].time - self._clock()
            if self._offset is None or offset > self._offset:
                self._offset = offset

    def now(self) -> float:
        """The current time on the events' clock."""
        state = self.state
        if state.finished_at is not None:
            return state.finished_at
        if self._offset is None:
            return state.now
        return max(state.now, self._clock() + self._offset)

    def _max_rows_now(self) -> int | None:
        if self._final or self._max_rows is None:
            return None
        if self._max_rows == "auto":
            return max(1, self.console.size.height - _FOOTER_ROOM)
        return self._max_rows

    def _renderable(self) -> RenderableType:
        # Called by `Live` (under its lock) once per redraw.
        self._renders += 1
        self.drain()
        return ThreadTreeView(self.state, now=self.now(), max_rows=self._max_rows_now())
