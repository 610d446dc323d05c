"""Metrics on hand-built trees with known answers, and trace files."""

from __future__ import annotations

import json

import pytest

from spawnjoin.trace import CallTrace, SpawnTrace, ThreadTrace, Trace, compute_metrics


def thread(tid: str, tokens: list[int], spawns: list[list[str]] | None = None, prompt_tokens: int = 10) -> ThreadTrace:
    parent = tid.rsplit(".", 1)[0] if "." in tid else None
    return ThreadTrace(
        id=tid,
        parent_id=parent,
        depth=tid.count("."),
        prompt="p",
        calls=[CallTrace(context="c", completion_tokens=n, prompt_tokens=prompt_tokens + i) for i, n in enumerate(tokens)],
        spawns=[SpawnTrace(after_call=i, requested=len(s), children=s) for i, s in enumerate(spawns or [])],
        status="done",
    )


def tree(*threads: ThreadTrace) -> Trace:
    return Trace(root_id="0", threads={t.id: t for t in threads}, started_at=0.0, finished_at=2.5)


def test_single_thread() -> None:
    m = compute_metrics(tree(thread("0", [7])))
    assert (m.threads, m.total_tokens, m.sequential_tokens, m.max_context, m.spawns) == (1, 7, 7, 17, 0)
    assert m.wall_time == 2.5


def test_two_spawns_with_nested_children() -> None:
    # root: 5 + [spawn: 0.0 (3 + [spawn: 0.0.0 (20), 0.0.1 (4)]), 0.1 (10)] + 6 + [spawn: 0.2 (2)] + 1
    t = tree(
        thread("0", [5, 6, 1], [["0.0", "0.1"], ["0.2"]]),
        thread("0.0", [3, 0], [["0.0.0", "0.0.1"]]),
        thread("0.0.0", [20]),
        thread("0.0.1", [4]),
        thread("0.1", [10]),
        thread("0.2", [2]),
    )
    m = compute_metrics(t)
    assert m.total_tokens == 12 + 3 + 20 + 4 + 10 + 2
    # seq(0.0) = 3 + 20 = 23 > seq(0.1) = 10, so seq(root) = 12 + 23 + 2
    assert m.sequential_tokens == 37
    assert m.threads == 6 and m.spawns == 3
    assert m.max_context == 10 + 20


def test_threads_without_calls_do_not_count_and_skipped_children_add_nothing() -> None:
    waiting = ThreadTrace(id="0.1", parent_id="0", depth=1, prompt="p", status="cancelled")
    t = tree(thread("0", [5], [["0.0", "0.1"]]), thread("0.0", [4]), waiting)
    t.threads["0"].spawns.append(SpawnTrace(after_call=0, requested=3, children=[], note="granted 0 of 3"))
    m = compute_metrics(t)
    assert (m.threads, m.total_tokens, m.sequential_tokens) == (2, 9, 9)


def test_cached_tokens_none_unless_reported() -> None:
    t = tree(thread("0", [5]))
    assert compute_metrics(t).cached_tokens is None
    t.threads["0"].calls[0].cached_tokens = 8
    assert compute_metrics(t).cached_tokens == 8


def test_save_load_round_trip_and_version_check(tmp_path) -> None:
    t = tree(thread("0", [5, 6], [["0.0"]]), thread("0.0", [3]))
    t.metrics = compute_metrics(t)
    path = t.save(tmp_path / "t.json")
    again = Trace.load(path)
    assert again == t
    assert [x.id for x in again.walk()] == ["0", "0.0"]
    data = json.loads(path.read_text())
    data["schema_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="schema version 99"):
        Trace.load(path)


def test_malformed_spawns_counts_the_flag_and_reads_older_traces_by_reason(tmp_path) -> None:
    flagged = thread("0.0", [3]).model_copy(update={"malformed": True, "reason": "malformed spawn: x"})
    legacy = thread("0.1", [3]).model_copy(update={"reason": "malformed spawn: written before the flag existed"})
    other = thread("0.2", [3]).model_copy(update={"reason": "context window full"})
    t = tree(thread("0", [5], [["0.0", "0.1", "0.2"]]), flagged, legacy, other)
    assert t.malformed_spawns == 2

    data = json.loads(t.model_dump_json())
    for record in data["threads"].values():
        del record["malformed"]  # a trace saved before ThreadTrace.malformed existed
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    old = Trace.load(path)
    assert old.malformed_spawns == 2 and not old.threads["0.0"].malformed
