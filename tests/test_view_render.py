"""The thread tree as fixed-width text, the throttled live view, replay, and the progress bar."""

from __future__ import annotations

import asyncio
import io
import time

import pytest
from rich.console import Console
from test_view_state import hand_trace, scenario

from spawnjoin.events import (
    CallFinished,
    CallStarted,
    Event,
    EventStream,
    SolveFinished,
    Spawned,
    ThreadFinished,
    ThreadStarted,
    TokensGenerated,
)
from spawnjoin.view.live import LiveView
from spawnjoin.view.progress import progress_bar
from spawnjoin.view.replay import print_trace, replay
from spawnjoin.view.state import ViewState
from spawnjoin.view.tree import ThreadTreeView, format_rate, format_seconds, format_tokens


def text_of(renderable: object, width: int = 100) -> list[str]:
    console = Console(record=True, width=width, force_terminal=False)
    console.print(renderable)
    return console.export_text().splitlines()


def test_a_running_tree() -> None:
    state = ViewState.from_events(scenario()[:11])
    assert text_of(ThreadTreeView(state, now=4.0)) == [
        "root   waiting  10 tok   5.0 tok/s  plan: split in two",
        "├── a  running  20 tok  10.0 tok/s  a works",
        "└── b  running   0 tok   0.0 tok/s",
        "threads 3 (2 running, 1 waiting) · tokens 30 (30 sequential) · elapsed 4.0s · cache reuse 0% (0 tok)",
    ]


def test_a_finished_tree_shows_reasons_and_the_outcome() -> None:
    state = ViewState.from_events(scenario())
    assert text_of(ThreadTreeView(state)) == [
        "root   done    16 tok   5.3 tok/s  plan: split in two answer 42",
        "├── a  done    20 tok  10.0 tok/s  a works",
        "└── b  failed   5 tok   1.7 tok/s  ServerError: boom",
        "threads 3 (1 failed) · tokens 41 (36 sequential) · elapsed 6.5s · cache reuse 35% (160 tok)",
        "solve done · answer 42",
    ]


def test_narrow_consoles_drop_words_and_wrap_the_footer_between_items() -> None:
    state = ViewState.from_events(scenario())
    assert text_of(ThreadTreeView(state), width=40) == [
        "root   done    16 tok   5.3 tok/s",
        "├── a  done    20 tok  10.0 tok/s",
        "└── b  failed   5 tok   1.7 tok/s",
        "threads 3 (1 failed)",
        "tokens 41 (36 sequential) · elapsed 6.5s",
        "cache reuse 35% (160 tok)",
        "solve done · answer 42",
    ]


def deep_events() -> list[Event]:
    """A chain root → c1 → c2 → c3 with long labels and a long last line."""
    events: list[Event] = [ThreadStarted("0", None, 0, "the root thread", "", 0.0)]
    parent = "0"
    for depth in range(1, 4):
        tid = f"{parent}.0"
        events += [
            Spawned(parent, (tid,), 1, None, 0.0),
            ThreadStarted(tid, parent, depth, f"level {depth} child", "", 0.0),
        ]
        parent = tid
    events += [
        CallStarted(parent, 0, None, None, 0.0),
        TokensGenerated(parent, "word " * 40 + "LAST", 41, 2.0),
    ]
    return events


def test_indentation_follows_depth_and_the_latest_words_win() -> None:
    lines = text_of(ThreadTreeView(ViewState.from_events(deep_events()), footer=False), width=70)
    assert lines == [
        "the root thread            waiting   0 tok",
        "└── level 1 child          waiting   0 tok",
        "    └── level 2 child      waiting   0 tok",
        "        └── level 3 child  running  41 tok  20.5 tok/s  …word LAST",
    ]


def test_long_labels_are_cropped_to_two_fifths_of_the_width() -> None:
    events = [ThreadStarted("0", None, 0, "x" * 80, "", 0.0)]
    (line,) = text_of(ThreadTreeView(ViewState.from_events(events), footer=False), width=50)
    assert line == "x" * 19 + "…  running  0 tok"


def wide_events(n: int, running: set[int]) -> list[Event]:
    events: list[Event] = [ThreadStarted("0", None, 0, "root", "", 0.0)]
    kids = tuple(f"0.{i}" for i in range(n))
    events.append(Spawned("0", kids, n, None, 0.0))
    for i, kid in enumerate(kids):
        events.append(ThreadStarted(kid, "0", 1, f"child {i}", "", float(i)))
        if i not in running:
            events.append(ThreadFinished(kid, "failed" if i == 7 else "done", None, float(i) + 0.5))
    return events


def test_limited_rows_keep_active_threads_and_count_the_rest() -> None:
    state = ViewState.from_events(wide_events(200, running={150, 3}))
    lines = text_of(ThreadTreeView(state, max_rows=6, footer=False))
    assert lines == [
        "root           waiting  0 tok",
        "├── child 3    running  0 tok",
        "├── child 7    failed   0 tok",
        "├── child 150  running  0 tok",
        "└── child 199  done     0 tok",
        "… 196 more threads (196 done)",
    ]


def test_formatting_helpers() -> None:
    assert format_tokens(1234567) == "1,234,567 tok"
    assert (format_rate(None), format_rate(12.345), format_rate(12345.6)) == (
        "",
        "12.3 tok/s",
        "12,346 tok/s",
    )
    assert (format_seconds(3.21), format_seconds(125.0)) == ("3.2s", "2m05s")


def test_print_trace_shows_the_header_and_the_final_tree() -> None:
    trace = hand_trace()
    trace.error = None
    console = Console(record=True, width=100, force_terminal=False)
    print_trace(trace, console)
    assert console.export_text().splitlines() == [
        "dialect threadweaver · backend scripted · status done",
        "root   done    16 tok   5.3 tok/s  plan: split in two answer 42",
        "├── a  done    20 tok  10.0 tok/s  a works",
        "└── b  failed   5 tok   1.7 tok/s  ServerError: boom",
        "threads 3 (1 failed) · tokens 41 (36 sequential) · elapsed 6.5s · cache reuse 35% (160 tok)",
        "solve done",
    ]


def token_storm(threads: int, tokens: int) -> list[Event]:
    """Root spawns `threads` children; each streams `tokens` one-token chunks, round robin."""
    kids = tuple(f"0.{i}" for i in range(threads))
    events: list[Event] = [
        ThreadStarted("0", None, 0, "root", "", 0.0),
        Spawned("0", kids, threads, None, 0.0),
    ]
    for i, kid in enumerate(kids):
        events += [ThreadStarted(kid, "0", 1, f"worker {i}", "", 0.0), CallStarted(kid, 0, 10, None, 0.0)]
    for step in range(tokens):
        events += [TokensGenerated(kid, f" t{step}", 1, step * 0.01) for kid in kids]
    for kid in kids:
        events += [
            CallFinished(kid, 0, "eos", None, tokens, 5, tokens * 0.01),
            ThreadFinished(kid, "done", None, tokens * 0.01),
        ]
    events += [ThreadFinished("0", "done", None, tokens * 0.01), SolveFinished("done", "ok", tokens * 0.01)]
    return events


async def test_the_live_view_is_throttled_and_ends_with_every_thread() -> None:
    threads, tokens = 200, 40
    events = token_storm(threads, tokens)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, height=30)
    stream = EventStream()
    view = LiveView(stream, console=console, refresh_per_second=8)
    started = time.perf_counter()
    with view:
        per_round = threads
        for k in range(0, len(events), per_round):
            for event in events[k : k + per_round]:
                stream.emit(event)
            await asyncio.sleep(0.01)  # the scheduler yields between rounds of chunks
    elapsed = time.perf_counter() - started
    stats = view.statistics()
    assert stats.events_received == stats.events_applied == len(events)
    # At most 8 redraws a second, plus the first and the last frame and rich's initial build.
    assert 2 <= stats.renders <= 8 * elapsed + 3, (stats.renders, elapsed)
    text = out.getvalue()
    assert "more threads" in text  # while live the tree was cut to the terminal's height
    final = text[text.rindex("root") :]
    for i in range(threads):
        assert f"worker {i} " in final
    assert "threads 201 · tokens 8,000 (40 sequential)" in final
    assert view.state.totals().total_tokens == threads * tokens


def test_the_live_view_on_a_file_prints_only_the_final_frame() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=100)
    view = LiveView(console=console)
    with view:
        for event in scenario():
            view.push(event)
    assert out.getvalue().splitlines() == text_of(ThreadTreeView(ViewState.from_events(scenario())))


def test_replay_follows_the_recorded_pace_on_an_injected_clock() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=100)
    view = replay(hand_trace(), speed=2.0, console=console, clock=lambda: now[0], sleep=sleep)
    assert sum(slept) == pytest.approx(6.5 / 2)
    lines = out.getvalue().splitlines()
    assert lines[0] == "dialect threadweaver · backend scripted · status done"
    assert lines[1:] == text_of(ThreadTreeView(ViewState.from_trace(hand_trace())))
    assert view.state.totals() == ViewState.from_trace(hand_trace()).totals()


def test_progress_bar() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=100)
    with progress_bar(3, "training", console=console) as advance:
        for _ in range(3):
            advance(1)
    text = out.getvalue()
    assert "training" in text and "3/3" in text and "100%" in text
