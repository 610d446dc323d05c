"""A self-contained HTML page of a trace: metrics, a Gantt timeline (inline SVG) and a collapsible tree.

The page needs no script, stylesheet or font from anywhere: the tree is nested `<details>` elements and the
timeline is one `<svg>` whose bars link to the threads' entries in the tree.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from spawnjoin.trace import ThreadTrace, Trace, compute_metrics

__all__ = ["render_html", "write_html", "timeline_svg", "STATUS_COLORS"]

STATUS_COLORS: dict[str, str] = {
    "pending": "#9e9e9e",
    "running": "#f0b400",
    "waiting": "#4a7bd0",
    "done": "#2e9d4f",
    "failed": "#d03a3a",
    "cancelled": "#a24cc2",
}
"""Colour of each thread status in the timeline and the tree."""

_ROW = 22  # timeline row height, px
_LABEL_W = 240  # timeline label column, px
_PLOT_W = 760  # timeline plot width, px
_AXIS_H = 24

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1060px; color: #222; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
.meta { color: #666; } .error { color: #b00020; }
table.metrics td { padding: 0 1.2em 0 0; } table.metrics td.n { text-align: right; font-variant-numeric: tabular-nums; }
details.thread { margin: 0.25em 0 0.25em 1.2em; border-left: 2px solid #ddd; padding-left: 0.6em; }
details.thread > summary { cursor: pointer; }
.status { font-weight: 600; } .dim { color: #777; }
pre { white-space: pre-wrap; background: #f6f6f6; padding: 0.5em; margin: 0.3em 0; max-height: 24em; overflow: auto; }
svg text { font: 12px system-ui, sans-serif; }
"""


def _seconds(x: float | None) -> str:
    return "?" if x is None else f"{x:.2f}s"


def _span(trace: Trace) -> tuple[float, float]:
    """The time range the timeline covers."""
    times = [trace.started_at]
    for t in trace.threads.values():
        times.append(t.started_at)
        times.extend(x for x in (t.finished_at, *(c.finished_at for c in t.calls)) if x is not None)
    if trace.finished_at is not None:
        times.append(trace.finished_at)
    start, end = min(times), max(times)
    return start, max(end, start + 1e-9)


def _thread_end(thread: ThreadTrace, fallback: float) -> float:
    if thread.finished_at is not None:
        return thread.finished_at
    ends = [c.finished_at for c in thread.calls if c.finished_at is not None]
    return max(ends, default=fallback)


def timeline_svg(trace: Trace) -> str:
    """An inline SVG Gantt chart: one row per thread (tree order), a pale bar for its lifetime and a solid
    segment per backend call."""
    threads = trace.walk()
    start, end = _span(trace)
    scale = _PLOT_W / (end - start)
    height = _AXIS_H + _ROW * len(threads)
    out = [
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{_LABEL_W + _PLOT_W + 10}" '
        f'height="{height}" role="img" aria-label="thread timeline">'
    ]
    for k in range(6):
        x = _LABEL_W + _PLOT_W * k / 5
        out.append(f'<line x1="{x:.1f}" y1="{_AXIS_H - 6}" x2="{x:.1f}" y2="{height}" stroke="#eee"/>')
        out.append(
            f'<text x="{x:.1f}" y="{_AXIS_H - 10}" text-anchor="middle" fill="#777">'
            f"{(end - start) * k / 5:.2f}s</text>"
        )
    for row, thread in enumerate(threads):
        y = _AXIS_H + row * _ROW
        color = STATUS_COLORS.get(thread.status, "#777")
        name = escape(thread.label or thread.id)
        out.append(f'<text x="{4 + 12 * thread.depth}" y="{y + _ROW - 7}" fill="#333">{name}</text>')
        x0 = _LABEL_W + (thread.started_at - start) * scale
        x1 = _LABEL_W + (_thread_end(thread, end) - start) * scale
        tip = escape(
            f"{thread.label or thread.id} [{thread.id}] {thread.status}: {thread.tokens} tokens, "
            f"{_seconds(thread.started_at - start)} → {_seconds(thread.finished_at and thread.finished_at - start)}"
        )
        out.append(f'<a href="#thread-{escape(thread.id)}"><g class="bar" data-thread="{escape(thread.id)}">')
        out.append(f"<title>{tip}</title>")
        out.append(
            f'<rect class="life" x="{x0:.1f}" y="{y + 4}" width="{max(x1 - x0, 1):.1f}" height="{_ROW - 8}" '
            f'fill="{color}" fill-opacity="0.25" stroke="{color}"/>'
        )
        for call in thread.calls:
            c0 = _LABEL_W + (call.started_at - start) * scale
            c1 = _LABEL_W + ((call.finished_at if call.finished_at is not None else end) - start) * scale
            out.append(
                f'<rect class="call" x="{c0:.1f}" y="{y + 6}" width="{max(c1 - c0, 1):.1f}" '
                f'height="{_ROW - 12}" fill="{color}"/>'
            )
        out.append("</g></a>")
    out.append("</svg>")
    return "\n".join(out)


def _thread_details(trace: Trace, thread: ThreadTrace) -> list[str]:
    """Nested `<details>` for `thread` and, inside it, its children (iterative: deep trees are fine)."""
    out: list[str] = []
    # Each stack entry is a thread to open, or a closing tag to emit once its children are written.
    stack: list[ThreadTrace | str] = [thread]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        t = item
        color = STATUS_COLORS.get(t.status, "#777")
        duration = None if t.finished_at is None else t.finished_at - t.started_at
        out.append(f'<details class="thread" id="thread-{escape(t.id)}" open>')
        out.append(
            f"<summary><b>{escape(t.label or t.id)}</b> <span class=dim>[{escape(t.id)}]</span> "
            f'<span class="status" style="color:{color}">{escape(t.status)}</span> · {t.tokens:,} tokens · '
            f"{len(t.calls)} calls · {_seconds(duration)}</summary>"
        )
        if t.reason:
            out.append(f"<div>reason: {escape(t.reason)}</div>")
        if t.error:
            out.append(f'<div class="error">error: {escape(t.error)}</div>')
        out.append(f"<details><summary>prompt</summary><pre>{escape(t.prompt)}</pre></details>")
        for i, call in enumerate(t.calls):
            cached = "" if call.cached_tokens is None else f", {call.cached_tokens} cached"
            out.append(
                f"<details><summary>call {i}: {call.completion_tokens} tokens, "
                f"{escape(call.finish_reason or 'unfinished')}{cached}</summary><pre>{escape(call.text)}</pre></details>"
            )
        for spawn in t.spawns:
            note = f" ({escape(spawn.note)})" if spawn.note else ""
            out.append(
                f"<div class=dim>spawn after call {spawn.after_call}: {len(spawn.children)} of "
                f"{spawn.requested} children{note}</div>"
            )
        if t.result is not None:
            out.append(f"<details><summary>result</summary><pre>{escape(t.result)}</pre></details>")
        stack.append("</details>")
        stack.extend(reversed(trace.children_of(t.id)))
    return out


def render_html(trace: Trace, *, title: str = "spawnjoin trace") -> str:
    """The whole page for `trace`, as one self-contained HTML string.

    Args:
        trace: The trace to show (partial traces are fine).
        title: Page title. Defaults to "spawnjoin trace".
    """
    metrics = trace.metrics if trace.metrics.threads else compute_metrics(trace)
    rows = [
        ("threads", f"{metrics.threads:,}"),
        ("total tokens", f"{metrics.total_tokens:,}"),
        ("sequential tokens", f"{metrics.sequential_tokens:,}"),
        ("max context", f"{metrics.max_context:,}"),
        ("cached tokens", "n/a" if metrics.cached_tokens is None else f"{metrics.cached_tokens:,}"),
        ("spawns", f"{metrics.spawns:,}"),
        ("wall time", f"{metrics.wall_time:.2f}s"),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">dialect {escape(trace.dialect or "?")} · backend {escape(trace.backend or "?")} · '
        f"status {escape(trace.status)}</p>",
    ]
    if trace.error:
        parts.append(f'<p class="error">error: {escape(trace.error)}</p>')
    parts.append('<table class="metrics">')
    parts.extend(f'<tr><td>{name}</td><td class="n">{value}</td></tr>' for name, value in rows)
    parts.append("</table>")
    parts.append("<h2>Timeline</h2>")
    parts.append(timeline_svg(trace))
    parts.append("<h2>Threads</h2>")
    parts.extend(_thread_details(trace, trace.root))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(trace: Trace, path: str | Path, *, title: str = "spawnjoin trace") -> Path:
    """Write `render_html(trace)` to `path` and return it."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render_html(trace, title=title), encoding="utf-8")
    return p
