"""The scheduler on a scripted backend: trees, metrics, budgets, failures, deadlines, cancellation."""

from __future__ import annotations

import asyncio
import json

import pytest

import spawnjoin
from spawnjoin import Budget, EventStream
from spawnjoin.backends.base import GenerationRequest
from spawnjoin.backends.scripted import ScriptedBackend, split_tokens
from spawnjoin.events import CallFinished, Joined, Spawned, ThreadFinished, ThreadStarted, TokensGenerated

ROOT = "Moving to Node #0\nCurrent State: 24:[4, 9, 3], Operations: []\n"
ROOT_1 = (
    "Exploring Operation: 9/3=3, Resulting Numbers: [4, 3]\n"
    "Generated Node #0,0: 24:[4, 3] Operation: 9/3=3\n"
    "Exploring Operation: 9-3=6, Resulting Numbers: [4, 6]\n"
    "Generated Node #0,1: 24:[4, 6] Operation: 9-3=6\n"
)
SPAWN = (
    "<Calling Sub Searches>\n"
    "<Start Sub Search 0 at level 1> Moving to Node #0,0\n"
    "<Start Sub Search 1 at level 1> Moving to Node #0,1\n"
    "<End Calling Sub Searches>\n"
)
CHILD_00 = "Moving to Node #0,0\nCurrent State: 24:[4, 3], Operations: ['9/3=3']\n"
CHILD_01 = "Moving to Node #0,1\nCurrent State: 24:[4, 6], Operations: ['9-3=6']\n"
OUT_00 = (
    "Exploring Operation: 4+3=7, Resulting Numbers: [7]\n7,24 unequal: No Solution\n"
    "Exploring Operation: 4*3=12, Resulting Numbers: [12]\n12,24 unequal: No Solution\nNo solution found.\n"
)
PATH_01 = CHILD_01 + "Exploring Operation: 4*6=24, Resulting Numbers: [24]\n24,24 equal: Goal Reached\n"
OUT_01 = "Exploring Operation: 4*6=24, Resulting Numbers: [24]\n24,24 equal: Goal Reached\n" + PATH_01
JOIN = (
    "<Sub Searches>\n"
    "<No Solution in Sub Search 0 at level 1 at Node #0,0>\n"
    "<Goal Reached in Sub Search 1 at level 1 at Node #0,1>\n" + PATH_01 + "<End Sub Searches>\n"
)
FINAL = (
    "24,24 equal: Goal Reached\n"
    "Moving to Node #0\nCurrent State: 24:[4, 9, 3], Operations: []\n"
    "Exploring Operation: 9-3=6, Resulting Numbers: [4, 6]\n"
    "Moving to Node #0,1\nCurrent State: 24:[4, 6], Operations: ['9-3=6']\n"
    "Exploring Operation: 4*6=24, Resulting Numbers: [24]\n24,24 equal: Goal Reached\n"
)


def apr_model(request: GenerationRequest) -> str:
    """A scripted 'model' that writes the APR example of the format reference."""
    prompt = request.prompt
    if prompt == ROOT:
        return ROOT_1 + SPAWN
    if prompt == ROOT + ROOT_1 + JOIN:
        return FINAL
    if prompt == CHILD_00:
        return OUT_00
    if prompt == CHILD_01:
        return OUT_01
    raise AssertionError(f"unexpected prompt {prompt!r}")


def ntok(text: str) -> int:
    return len(split_tokens(text))


async def test_apr_solve_builds_the_expected_tree_and_metrics() -> None:
    backend = ScriptedBackend(apr_model)
    result = await spawnjoin.solve(ROOT, backend=backend, dialect="apr")
    assert result.status == "done", result.error
    trace = result.trace
    root = trace.root
    assert [t.id for t in trace.walk()] == ["0", "0.0", "0.1"]
    assert [t.label for t in trace.children_of("0")] == ["Node #0,0", "Node #0,1"]
    assert trace.threads["0.0"].prompt == CHILD_00
    assert trace.threads["0.1"].prompt == CHILD_01
    assert trace.threads["0.0"].result is None
    assert trace.threads["0.1"].result == PATH_01
    # the stop string is re-appended; the parent resumes from its text before the spawn block
    assert root.calls[0].text == ROOT_1 + SPAWN.rstrip("\n")
    assert root.calls[1].context == ROOT + ROOT_1 + JOIN
    assert result.text == ROOT + ROOT_1 + JOIN + FINAL
    assert result.answer == FINAL[len("24,24 equal: Goal Reached\n"):]
    own_root = ntok(ROOT_1 + SPAWN.rstrip("\n"))  # the stop string's tokens were generated too
    m = result.metrics
    root_tokens = root.tokens
    assert root_tokens == own_root + ntok(FINAL)
    assert m.threads == 3
    assert m.total_tokens == root_tokens + ntok(OUT_00) + ntok(OUT_01)
    assert m.sequential_tokens == root_tokens + max(ntok(OUT_00), ntok(OUT_01))
    assert m.spawns == 1
    assert m.max_context == max((c.prompt_tokens or 0) + c.completion_tokens for t in trace.walk() for c in t.calls)
    assert m.max_context == ntok(ROOT + ROOT_1 + JOIN) + ntok(FINAL)


def nested_model(request: GenerationRequest) -> str:
    """Root spawns 2; child 1 spawns 3 more (depth 2); every leaf answers."""
    p = request.prompt
    if p == "Q" :
        return "root thinks <Parallel>\n<Outlines>\n<Outline>1: a</Outline>\n<Outline>2: b</Outline>\n</Outlines>"
    if p.endswith("\n<Thread>\n1:"):
        return " leaf one done</Thread>"
    if p.endswith("\n<Thread>\n2:"):
        return " two two two</Thread>"
    if "</Parallel>" in p:
        return " so the answer is 42"
    raise AssertionError(p)


async def test_threadweaver_children_share_the_prefix_and_join_verbatim() -> None:
    backend = ScriptedBackend(nested_model)
    result = await spawnjoin.solve("Q", backend=backend, dialect="threadweaver")
    assert result.status == "done"
    root = result.trace.root
    kids = result.trace.children_of("0")
    assert [k.prompt for k in kids] == [
        "Q" + root.calls[0].text + "\n<Thread>\n1:",
        "Q" + root.calls[0].text + "\n<Thread>\n2:",
    ]
    assert root.calls[1].context.endswith(
        "</Outlines>\n<Thread>\n1: leaf one done</Thread>\n<Thread>\n2: two two two</Thread>\n</Parallel>\n"
    )
    assert result.text.endswith(" so the answer is 42")
    assert result.metrics.sequential_tokens == root.tokens + max(k.tokens for k in kids)


def deep_model(request: GenerationRequest) -> str:
    """APR-shaped nesting three levels deep: every thread at depth < 3 spawns two children."""
    p = request.prompt
    node = p.split("\n", 1)[0].removeprefix("Moving to Node #")
    if "<Sub Searches>" in p:
        return "No solution found.\n"
    depth = node.count(",")
    if depth >= 3:
        return "Exploring Operation: 1+1=2, Resulting Numbers: [2]\n2,24 unequal: No Solution\nNo solution found.\n"
    lines = []
    for i in range(2):
        lines.append(f"Generated Node #{node},{i}: 24:[1, 1] Operation: 1+{i}={1 + i}\n")
    lines.append("<Calling Sub Searches>\n")
    for i in range(2):
        lines.append(f"<Start Sub Search {i} at level {depth + 1}> Moving to Node #{node},{i}\n")
    lines.append("<End Calling Sub Searches>\n")
    return "".join(lines)


async def test_nesting_to_the_depth_budget_and_budget_cuts_are_recorded() -> None:
    prompt = "Moving to Node #0\nCurrent State: 24:[1, 1, 1], Operations: []\n"
    full = await spawnjoin.solve(prompt, backend=ScriptedBackend(deep_model), budget=Budget(max_depth=3))
    assert full.metrics.threads == 1 + 2 + 4 + 8
    assert max(t.depth for t in full.trace.walk()) == 3
    assert full.trace.threads["0.1.0.1"].prompt == (
        "Moving to Node #0,1,0,1\nCurrent State: 24:[1, 1], Operations: ['1+1=2', '1+0=1', '1+1=2']\n"
    )

    cut = await spawnjoin.solve(prompt, backend=ScriptedBackend(deep_model), budget=Budget(max_depth=1))
    assert cut.metrics.threads == 3
    spawn = cut.trace.threads["0.0"].spawns[0]
    assert spawn.requested == 2 and spawn.children == []
    assert "max_depth=1" in (spawn.note or "")
    # the parent was told: every refused child reads as "No Solution"
    assert "<No Solution in Sub Search 1 at level 2 at Node #0,0,1>" in cut.trace.threads["0.0"].transcript

    few = await spawnjoin.solve(prompt, backend=ScriptedBackend(deep_model), budget=Budget(max_threads=4))
    assert few.metrics.threads == 4
    assert len(few.trace.threads) == 4


async def test_events_stream_in_order_and_match_the_trace() -> None:
    events = EventStream()
    seen: list[object] = []
    events.add_hook(seen.append)
    sub = events.subscribe()
    result = await spawnjoin.solve(ROOT, backend=ScriptedBackend(apr_model), events=events)
    from_queue = [e async for e in sub]
    assert from_queue == seen
    started = [e.thread_id for e in seen if isinstance(e, ThreadStarted)]
    finished = [e.thread_id for e in seen if isinstance(e, ThreadFinished)]
    assert sorted(started) == sorted(finished) == ["0", "0.0", "0.1"]
    assert [type(e) for e in seen if isinstance(e, (Spawned, Joined))] == [Spawned, Joined]
    streamed = "".join(e.text for e in seen if isinstance(e, TokensGenerated) and e.thread_id == "0.1")
    assert streamed == result.trace.threads["0.1"].calls[0].text
    # token events count streamed tokens; CallFinished carries the engine's count (stop-string tokens too)
    streamed_tokens = sum(e.tokens for e in seen if isinstance(e, TokensGenerated))
    assert 0 < streamed_tokens <= result.metrics.total_tokens
    assert sum(e.completion_tokens for e in seen if isinstance(e, CallFinished)) == result.metrics.total_tokens


async def test_failed_child_is_reported_and_the_parent_goes_on() -> None:
    from spawnjoin import ServerError

    def model(request: GenerationRequest) -> object:
        if request.prompt == CHILD_01:
            return ServerError("boom", status=500)
        if request.prompt.startswith(ROOT) and "<Sub Searches>" in request.prompt:
            assert "<No Solution in Sub Search 1 at level 1 at Node #0,1>" in request.prompt
            return "No solution found.\n"
        return apr_model(request)

    result = await spawnjoin.solve(ROOT, backend=ScriptedBackend(model))
    assert result.status == "done"
    child = result.trace.threads["0.1"]
    assert child.status == "failed" and "boom" in (child.error or "")
    assert result.trace.threads["0.0"].status == "done"
    assert result.answer is None


@pytest.mark.parametrize(
    "bad",
    [
        "<Calling Sub Searches>\n<End Calling Sub Searches>",  # zero children
        "<Calling Sub Searches>\n<Start Sub Search 1 at level 1> Moving to Node #0,0\n<End Calling Sub Searches>",
        "<Calling Sub Searches>\ngarbage\n<End Calling Sub Searches>",
        "<Start Sub Search 0 at level 1> Moving to Node #0,0\n<End Calling Sub Searches>",  # unopened
        "<Calling Sub Searches>\n<Start Sub Search 0 at level 1> Moving to Node #0,7\n<End Calling Sub Searches>",
    ],
)
async def test_malformed_spawn_ends_the_thread_with_a_reason(bad: str) -> None:
    result = await spawnjoin.solve(ROOT, backend=ScriptedBackend([ROOT_1 + bad]))
    assert result.status == "done"
    assert result.metrics.threads == 1
    assert result.trace.root.reason is not None and result.trace.root.reason.startswith("malformed spawn")
    assert result.trace.root.malformed and result.trace.malformed_spawns == 1


async def test_a_thread_ended_normally_is_not_malformed() -> None:
    result = await spawnjoin.solve(ROOT, backend=ScriptedBackend(apr_model))
    assert result.metrics.threads > 1
    assert result.trace.malformed_spawns == 0
    assert not any(t.malformed for t in result.trace.threads.values())


async def test_context_window_sizes_max_tokens_and_fails_clearly_when_full() -> None:
    backend = ScriptedBackend(apr_model, context_window=400)
    result = await spawnjoin.solve(ROOT, backend=backend)
    assert result.status == "done"
    for req in backend.requests:
        assert req.params.max_tokens == 400 - len(split_tokens(req.prompt))

    tiny = ScriptedBackend(apr_model, context_window=5)
    failed = await spawnjoin.solve(ROOT, backend=tiny)
    assert failed.status == "failed"
    assert "context window" in (failed.error or "")
    assert tiny.requests == []


async def test_total_token_budget_cuts_generation() -> None:
    result = await spawnjoin.solve(ROOT, backend=ScriptedBackend(apr_model), budget=Budget(max_total_tokens=10))
    assert result.metrics.total_tokens == 10
    assert "token budget" in (result.trace.root.reason or "")


async def test_deadline_returns_the_partial_tree() -> None:
    backend = ScriptedBackend(apr_model, delay=0.01)
    result = await spawnjoin.solve(ROOT, backend=backend, budget=Budget(deadline=0.3))
    assert result.status == "deadline"
    assert result.trace.root.calls and result.trace.root.calls[0].text  # partial text kept
    assert all(t.status in ("done", "cancelled") for t in result.trace.threads.values())
    assert any(t.status == "cancelled" and t.reason == "deadline" for t in result.trace.threads.values())
    assert result.metrics.total_tokens > 0


async def test_cancelled_solve_cancels_the_subtree_and_saves_the_trace(tmp_path) -> None:
    backend = ScriptedBackend(apr_model, delay=0.01)
    path = tmp_path / "partial.json"
    events = EventStream()
    task = asyncio.create_task(spawnjoin.solve(ROOT, backend=backend, events=events, trace_path=path))
    sub = events.subscribe()
    async for event in sub:
        if isinstance(event, Spawned):
            break
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    saved = json.loads(path.read_text())
    assert saved["status"] == "cancelled"
    statuses = {tid: t["status"] for tid, t in saved["threads"].items()}
    assert statuses["0.0"] == statuses["0.1"] == "cancelled"
    assert all(t["finished_at"] is not None for t in saved["threads"].values())
    assert sum(len(t["calls"]) for t in saved["threads"].values()) == 3


async def test_concurrency_budget_limits_requests_in_flight() -> None:
    live = 0
    peak = 0

    async def model(request: GenerationRequest):
        nonlocal live, peak
        live += 1
        peak = max(peak, live)
        await asyncio.sleep(0.01)
        live -= 1
        return apr_model(request)

    result = await spawnjoin.solve(ROOT, backend=ScriptedBackend(model), budget=Budget(max_concurrency=1))
    assert result.status == "done" and peak == 1
