"""The HTML page of a trace: every thread in the tree and in the SVG timeline, nothing fetched, text escaped."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from test_view_state import hand_trace

from spawnjoin.trace import CallTrace, SpawnTrace, ThreadTrace, Trace, compute_metrics
from spawnjoin.view.html import STATUS_COLORS, render_html, timeline_svg, write_html


class _Tags(HTMLParser):
    """Counts start tags and checks every opened `details` is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}
        self.open_details = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.counts[tag] = self.counts.get(tag, 0) + 1
        if tag == "details":
            self.open_details += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "details":
            self.open_details -= 1


def test_every_thread_is_in_the_tree_and_the_timeline() -> None:
    trace = hand_trace()
    page = render_html(trace)
    for thread in trace.threads.values():
        assert f'id="thread-{thread.id}"' in page
        assert f'data-thread="{thread.id}"' in page
        assert f'href="#thread-{thread.id}"' in page
    assert page.count('class="life"') == 3  # one lifetime bar per thread
    assert page.count('class="call"') == 4  # one solid segment per backend call
    assert STATUS_COLORS["failed"] in page and "ServerError: boom" in page
    assert "<svg" in page and "</svg>" in page
    parser = _Tags()
    parser.feed(page)
    assert parser.open_details == 0
    # thread + prompt + one per call for each thread
    assert parser.counts["details"] == 3 + 3 + 4


def test_the_timeline_scales_bars_to_the_solve() -> None:
    svg = timeline_svg(hand_trace())
    bars = re.findall(r'class="life" x="([\d.]+)" y="\d+" width="([\d.]+)"', svg)
    starts = [float(x) for x, _ in bars]
    widths = [float(w) for _, w in bars]
    # walk order root, a, b; the solve spans 6.5 s over 760 px starting at x=240
    assert starts == [240.0, round(240.0 + 2 / 6.5 * 760, 1), round(240.0 + 2 / 6.5 * 760, 1)]
    assert widths[0] == round(6 / 6.5 * 760, 1)
    assert "6.50s" in svg  # the last axis tick


def test_the_page_is_self_contained_and_escapes_model_text() -> None:
    root = ThreadTrace(
        id="0",
        label="<root>",
        prompt="<script>alert(1)</script>",
        status="done",
        finished_at=1.0,
        calls=[CallTrace(context="", text="a < b & c", completion_tokens=3, finished_at=1.0)],
    )
    trace = Trace(root_id="0", threads={"0": root}, finished_at=1.0, status="done")
    trace.metrics = compute_metrics(trace)
    page = render_html(trace, title="t & t")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "a &lt; b &amp; c" in page
    assert "<title>t &amp; t</title>" in page
    assert not re.search(r'(src|href)="(https?:)?//', page)


def test_write_html_and_a_partial_trace(tmp_path) -> None:  # type: ignore[no-untyped-def]
    root = ThreadTrace(
        id="0",
        label="root",
        prompt="Q",
        status="waiting",
        calls=[CallTrace(context="Q", text="spawn", completion_tokens=2, started_at=0.0, finished_at=1.0)],
        spawns=[SpawnTrace(after_call=0, requested=1, children=["0.0"])],
    )
    child = ThreadTrace(
        id="0.0",
        parent_id="0",
        depth=1,
        label="kid",
        prompt="q",
        status="running",
        started_at=1.0,
        calls=[CallTrace(context="q", text="thinking", completion_tokens=1, started_at=1.0)],
    )
    trace = Trace(root_id="0", threads={"0": root, "0.0": child}, status="running")
    path = write_html(trace, tmp_path / "out" / "trace.html")
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "kid" in page and "unfinished" in page
    assert page.count('class="life"') == 2
