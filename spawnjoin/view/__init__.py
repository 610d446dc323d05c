"""Views of a solve, built only from runtime events (this package alone imports rich).

Layout:

* `state`    `ViewState`: an event-sourced snapshot of the thread tree (no rendering, no rich).
* `timeline` `trace_events`: a saved `Trace` turned back into events, so traces render like live solves.
* `tree`     `ThreadTreeView`: a rich renderable of one snapshot, with a totals footer.
* `live`     `LiveView`: redraws the tree while a solve runs, throttled, fed by an `EventStream` hook.
* `replay`   `print_trace` and `replay`: show a saved trace at once or play it back live.
* `html`     `render_html`: a self-contained page with a collapsible tree and an SVG timeline.
* `progress` `progress_bar`: a progress bar for long jobs.
"""

from spawnjoin.view.html import render_html, write_html
from spawnjoin.view.live import LiveStatistics, LiveView
from spawnjoin.view.progress import progress_bar
from spawnjoin.view.replay import print_trace, replay
from spawnjoin.view.state import ThreadView, Totals, ViewState
from spawnjoin.view.timeline import trace_events
from spawnjoin.view.tree import ThreadTreeView

__all__ = [
    "LiveStatistics",
    "LiveView",
    "ThreadTreeView",
    "ThreadView",
    "Totals",
    "ViewState",
    "print_trace",
    "progress_bar",
    "render_html",
    "replay",
    "trace_events",
    "write_html",
]
