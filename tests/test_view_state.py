"""`ViewState`: the thread tree rebuilt from events alone, and `trace_events` that regenerate them."""

from __future__ import annotations

import pytest

import spawnjoin
from spawnjoin.backends.scripted import ScriptedBackend
from spawnjoin.events import (
    CallFinished,
    CallStarted,
    Event,
    EventStream,
    Joined,
    SolveFinished,
    Spawned,
    ThreadFinished,
    ThreadStarted,
    TokensGenerated,
)
from spawnjoin.trace import CallTrace, SpawnTrace, ThreadTrace, Trace, compute_metrics
from spawnjoin.view.state import TAIL_CHARS, ViewState
from spawnjoin.view.timeline import trace_events

needs_solve = pytest.mark.skipif(not hasattr(spawnjoin, "solve"), reason="spawnjoin.solve is not written yet")


def scenario() -> list[Event]:
    """Root decodes 10 tokens in 2 s, spawns a and b; a finishes, b fails; root joins and finishes."""
    return [
        ThreadStarted("0", None, 0, "root", "Q", 0.0),
        CallStarted("0", 0, 100, None, 0.0),
        TokensGenerated("0", "plan: split", 4, 1.0),
        TokensGenerated("0", " in two", 4, 2.0),
        CallFinished("0", 0, "stop", "</Outlines>", 10, 0, 2.0),
        Spawned("0", ("0.0", "0.1"), 2, None, 2.0),
        ThreadStarted("0.0", "0", 1, "a", "Qa", 2.0),
        ThreadStarted("0.1", "0", 1, "b", "Qb", 2.0),
        CallStarted("0.0", 0, 110, None, 2.0),
        CallStarted("0.1", 0, 110, None, 2.0),
        TokensGenerated("0.0", "a works", 20, 4.0),
        CallFinished("0.0", 0, "eos", None, 20, 60, 4.0),
        ThreadFinished("0.0", "done", None, 4.0),
        TokensGenerated("0.1", "b breaks", 5, 3.0),
        ThreadFinished("0.1", "failed", "ServerError: boom", 5.0),
        Joined("0", "joined", 5.0),
        CallStarted("0", 1, 140, None, 5.0),
        TokensGenerated("0", " answer 42", 6, 6.0),
        CallFinished("0", 1, "eos", None, 6, 100, 6.0),
        ThreadFinished("0", "done", None, 6.0),
        SolveFinished("done", "42", 6.5),
    ]


def state_after(n: int) -> ViewState:
    return ViewState.from_events(scenario()[:n])


def test_states_follow_the_events() -> None:
    assert state_after(3).threads["0"].state == "running"
    waiting = state_after(8)
    assert [waiting.threads[t].state for t in ("0", "0.0", "0.1")] == ["waiting", "running", "running"]
    assert waiting.threads["0"].children == ["0.0", "0.1"]
    final = ViewState.from_events(scenario())
    assert [final.threads[t].state for t in ("0", "0.0", "0.1")] == ["done", "done", "failed"]
    assert final.threads["0.1"].reason == "ServerError: boom"
    assert final.status == "done" and final.answer == "42" and final.finished
    assert [t.id for t in final.walk()] == ["0", "0.0", "0.1"]
    assert final.threads["0.0"].depth == 1 and final.threads["0.0"].parent_id == "0"


def test_joined_resumes_and_a_child_cancelled_mid_call_keeps_its_streamed_tokens() -> None:
    s = state_after(16)
    assert s.threads["0"].state == "running"
    events = scenario()[:10] + [
        TokensGenerated("0.1", "x", 3, 2.5),
        ThreadFinished("0.1", "cancelled", "deadline", 3.0),
    ]
    s = ViewState.from_events(events)
    child = s.threads["0.1"]
    assert (child.state, child.reason, child.tokens) == ("cancelled", "deadline", 3)
    assert child.call_started_at is None and child.decoding_seconds(99.0) == pytest.approx(1.0)


def test_streamed_tokens_are_replaced_by_the_backend_count() -> None:
    s = state_after(4)
    assert s.threads["0"].tokens == 8  # streaming estimate
    s = state_after(5)
    assert s.threads["0"].tokens == 10  # CallFinished: 10 tokens (the stop string's too)
    # A chunk that reports no token count is counted as one token until the call finishes.
    s = ViewState.from_events(
        [ThreadStarted("t", None, 0, "", "", 0.0), CallStarted("t", 0, None, None, 0.0)]
        + [TokensGenerated("t", "w", 0, 0.1 * i) for i in range(1, 6)]
    )
    assert s.threads["t"].tokens == 5
    s.apply(CallFinished("t", 0, "eos", None, 7, None, 1.0))
    assert s.threads["t"].tokens == 7 and s.threads["t"].name == "t"


def test_tokens_per_second_counts_decoding_time_only() -> None:
    s = ViewState.from_events(scenario())
    root = s.threads["0"]
    # 16 tokens over 2 s + 1 s of calls; the 3 s spent waiting on children do not count
    assert root.decoding_seconds(s.now) == pytest.approx(3.0)
    assert root.tokens_per_second(s.now) == pytest.approx(16 / 3)
    running = state_after(11).threads["0.0"]
    assert running.tokens_per_second(4.0) == pytest.approx(10.0)  # 20 tokens over 2 s, call still open
    assert ViewState.from_events(scenario()[:1]).threads["0"].tokens_per_second(0.0) is None


def test_tail_keeps_the_last_words() -> None:
    s = ViewState.from_events(
        [ThreadStarted("t", None, 0, "t", "", 0.0), CallStarted("t", 0, None, None, 0.0)]
        + [TokensGenerated("t", f" word{i}", 1, 0.0) for i in range(100)]
    )
    tail = s.threads["t"].tail
    assert len(tail) == TAIL_CHARS and tail.endswith(" word98 word99")


def test_totals() -> None:
    t = ViewState.from_events(scenario()).totals()
    assert (t.threads, t.running, t.waiting, t.failed, t.cancelled) == (3, 0, 0, 1, 0)
    assert t.total_tokens == 16 + 20 + 5
    assert t.sequential_tokens == 16 + max(20, 5)
    assert t.elapsed == pytest.approx(6.5)
    assert t.prompt_tokens == 100 + 110 + 110 + 140
    assert t.cached_tokens == 160 and t.cache_reuse == pytest.approx(160 / 460)
    live = state_after(11).totals(now=10.0)
    assert (live.running, live.waiting) == (2, 1)
    assert live.elapsed == pytest.approx(10.0)  # a running solve's clock keeps going
    assert ViewState().totals().cache_reuse is None and ViewState().elapsed() == 0.0


def test_a_spawn_may_name_children_before_they_start() -> None:
    s = ViewState.from_events(scenario()[:6])
    assert [s.threads[c].state for c in ("0.0", "0.1")] == ["pending", "pending"]
    assert s.totals().threads == 1
    s.apply(scenario()[6])
    assert s.threads["0.0"].state == "running" and s.threads["0"].children == ["0.0", "0.1"]


def test_unknown_events_are_ignored() -> None:
    s = ViewState()
    s.apply(object())  # type: ignore[arg-type]
    assert s.events == 0 and s.root is None and s.walk() == []


def hand_trace() -> Trace:
    """The scenario above, as the runtime would have recorded it."""
    root = ThreadTrace(
        id="0",
        label="root",
        prompt="Q",
        status="done",
        started_at=0.0,
        finished_at=6.0,
        calls=[
            CallTrace(
                context="Q",
                text="plan: split in two",
                finish_reason="stop",
                prompt_tokens=100,
                completion_tokens=10,
                cached_tokens=0,
                started_at=0.0,
                finished_at=2.0,
            ),
            CallTrace(
                context="joined",
                text=" answer 42",
                finish_reason="eos",
                prompt_tokens=140,
                completion_tokens=6,
                cached_tokens=100,
                started_at=5.0,
                finished_at=6.0,
            ),
        ],
        spawns=[SpawnTrace(after_call=0, requested=2, children=["0.0", "0.1"], join_text="joined")],
    )
    a = ThreadTrace(
        id="0.0",
        parent_id="0",
        depth=1,
        label="a",
        prompt="Qa",
        status="done",
        started_at=2.0,
        finished_at=4.0,
        calls=[
            CallTrace(
                context="Qa",
                text="a works",
                finish_reason="eos",
                prompt_tokens=110,
                completion_tokens=20,
                cached_tokens=60,
                started_at=2.0,
                finished_at=4.0,
            )
        ],
    )
    b = ThreadTrace(
        id="0.1",
        parent_id="0",
        depth=1,
        label="b",
        prompt="Qb",
        status="failed",
        reason="ServerError: boom",
        started_at=2.0,
        finished_at=5.0,
        calls=[
            CallTrace(context="Qb", text="b breaks", prompt_tokens=110, completion_tokens=5, started_at=2.0)
        ],
    )
    trace = Trace(
        root_id="0",
        threads={"0": root, "0.0": a, "0.1": b},
        dialect="threadweaver",
        backend="scripted",
        started_at=0.0,
        finished_at=6.5,
        status="done",
    )
    trace.metrics = compute_metrics(trace)
    return trace


def test_a_trace_gives_the_same_snapshot_as_the_events() -> None:
    trace = hand_trace()
    from_trace = ViewState.from_trace(trace)
    from_events = ViewState.from_events(scenario())
    for tid in ("0", "0.0", "0.1"):
        x, y = from_trace.threads[tid], from_events.threads[tid]
        assert (x.state, x.tokens, x.label, x.depth, x.reason) == (
            y.state,
            y.tokens,
            y.label,
            y.depth,
            y.reason,
        )
    totals = from_trace.totals()
    assert totals.total_tokens == trace.metrics.total_tokens
    assert totals.sequential_tokens == trace.metrics.sequential_tokens
    assert totals.threads == trace.metrics.threads
    assert totals.cached_tokens == trace.metrics.cached_tokens
    assert totals.elapsed == pytest.approx(trace.metrics.wall_time)


def test_trace_events_are_time_ordered_and_split_each_call() -> None:
    trace = hand_trace()
    events = trace_events(trace, pieces_per_call=4)
    assert [e.time for e in events] == sorted(e.time for e in events)
    root_tokens = [e for e in events if isinstance(e, TokensGenerated) and e.thread_id == "0"]
    assert len(root_tokens) == 8
    assert "".join(e.text for e in root_tokens) == "plan: split in two answer 42"
    assert sum(e.tokens for e in root_tokens) == 16
    assert isinstance(events[0], ThreadStarted) and isinstance(events[-1], SolveFinished)
    joined = [e for e in events if isinstance(e, Joined)]
    assert [(e.thread_id, e.time) for e in joined] == [("0", 5.0)]
    # the failed child's call never finished: no CallFinished, but its tokens still count
    assert not [e for e in events if isinstance(e, CallFinished) and e.thread_id == "0.1"]
    assert ViewState.from_events(events).threads["0.1"].tokens == 5


def test_a_partial_trace_leaves_threads_active() -> None:
    trace = hand_trace()
    trace.threads["0"].status = "waiting"
    trace.threads["0"].finished_at = None
    trace.threads["0"].calls = trace.threads["0"].calls[:1]
    trace.threads["0"].spawns[0].join_text = None
    trace.finished_at, trace.status = None, "running"
    s = ViewState.from_trace(trace)
    assert s.threads["0"].state == "waiting" and not s.finished and s.status == "running"


def tree_model(request: spawnjoin.backends.GenerationRequest) -> str:
    p = request.prompt
    if p.endswith("\n<Thread>\n1:"):
        return " 3 + 4 = 7, too small</Thread>"
    if p.endswith("\n<Thread>\n2:"):
        return " 6 * 7 = 42, found it</Thread>"
    if "</Parallel>" in p:
        return "<Conclusion>42</Conclusion>"
    return "Try two ways. <Parallel>\n<Outlines>\n<Outline>1: add</Outline>\n<Outline>2: multiply</Outline>\n</Outlines>"


@needs_solve
async def test_the_runtime_events_rebuild_its_metrics() -> None:
    events = EventStream()
    seen: list[Event] = []
    events.add_hook(seen.append)
    result = await spawnjoin.solve(
        "Q", backend=ScriptedBackend(tree_model), dialect="threadweaver", events=events
    )
    assert result.status == "done", result.error
    live = ViewState.from_events(seen)
    replayed = ViewState.from_trace(result.trace)
    m = result.metrics
    for state in (live, replayed):
        totals = state.totals()
        assert (totals.threads, totals.total_tokens, totals.sequential_tokens) == (
            m.threads,
            m.total_tokens,
            m.sequential_tokens,
        )
        assert [t.id for t in state.walk()] == [t.id for t in result.trace.walk()]
        assert {t.state for t in state.threads.values()} == {"done"}
    assert live.answer == result.answer and live.status == "done"
    for tid, thread in result.trace.threads.items():
        assert live.threads[tid].tokens == thread.tokens == replayed.threads[tid].tokens


def test_apply_all_matches_applying_one_by_one() -> None:
    events = scenario() + [TokensGenerated("late", "orphan text", 0, 7.0)]
    events += [TokensGenerated("0.0", f" piece{i}", 1, 7.0 + i) for i in range(60)]
    one_by_one = ViewState()
    for event in events:
        one_by_one.apply(event)
    batched = ViewState()
    batched.apply_all(events[:9])
    batched.apply_all(events[9:])
    assert batched.threads == one_by_one.threads
    assert (batched.events, batched.now, batched.started_at) == (one_by_one.events, one_by_one.now, 0.0)
    assert batched.totals() == one_by_one.totals()
