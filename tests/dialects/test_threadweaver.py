"""The ThreadWeaver dialect: outlines, shared-prefix children, verbatim joins, robustness."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from spawnjoin.dialects import ChildOutcome, Done, Spawn, ThreadWeaverDialect

D = ThreadWeaverDialect()
Q = "Question: what is 2+3*4?\n"
MAIN = (
    "Let me split this.\n<Parallel>\n<Outlines>\n<Outline>1: compute 3*4</Outline>\n"
    "<Outline>2: check the order of operations</Outline>\n</Outlines>"
)


def test_outlines_spawn_children_that_see_the_shared_prefix() -> None:
    decision = D.after_call(Q, MAIN, "stop")
    assert isinstance(decision, Spawn)
    assert [c.prompt for c in decision.children] == [Q + MAIN + "\n<Thread>\n1:", Q + MAIN + "\n<Thread>\n2:"]
    assert D.stop_strings(Q) == ("</Outlines>",)
    assert D.stop_strings(decision.children[0].prompt) == ("</Thread>",)


def test_join_appends_threads_verbatim_in_order() -> None:
    decision = D.after_call(Q, MAIN, "stop")
    assert isinstance(decision, Spawn)
    outcomes = [
        ChildOutcome(index=0, label="1", status="done", prompt="", result=" 3*4=12</Thread>"),
        ChildOutcome(index=1, label="2", status="failed", prompt="", reason="ServerError: boom"),
    ]
    assert D.join(Q, MAIN, decision, outcomes) == (
        Q + MAIN + "\n<Thread>\n1: 3*4=12</Thread>"
        "\n<Thread>\n2: [thread not run to completion: ServerError: boom]</Thread>\n</Parallel>\n"
    )


def test_a_child_never_spawns_and_bad_numbering_is_malformed() -> None:
    child_ctx = Q + MAIN + "\n<Thread>\n1:"
    assert isinstance(D.after_call(child_ctx, " x</Thread>", "stop"), Done)
    bad = MAIN.replace("<Outline>2:", "<Outline>3:")
    done = D.after_call(Q, bad, "stop")
    assert isinstance(done, Done) and done.malformed
    empty = D.after_call(Q, "<Parallel>\n<Outlines>\n</Outlines>", "stop")
    assert isinstance(empty, Done) and empty.malformed
    stray = D.after_call(Q, "<Parallel>\n<Outlines>\nhello<Outline>1: a</Outline>\n</Outlines>", "stop")
    assert isinstance(stray, Done) and stray.malformed


pieces = st.sampled_from(
    ["<Parallel>", "<Outlines>", "</Outlines>", "<Outline>1: a</Outline>", "<Outline>2: b</Outline>",
     "<Outline>", "</Outline>", "<Thread>", "</Thread>", "\n", " ", "1:", "x"]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(pieces, st.text(max_size=20)), max_size=15), st.sampled_from(["stop", "eos", "length"]))
def test_any_text_gives_a_spawn_or_done(parts: list[str], reason: str) -> None:
    text = "".join(parts)
    decision = D.after_call(Q, text, reason)
    assert isinstance(decision, (Spawn, Done))
    if isinstance(decision, Spawn):
        assert text.endswith("</Outlines>")
        n = len(decision.children)
        outcomes = [ChildOutcome(index=i, label="", status="skipped", prompt=c.prompt) for i, c in enumerate(decision.children)]
        joined = D.join(Q, text, decision, outcomes)
        assert joined.count("\n<Thread>\n") >= n and joined.endswith("</Parallel>\n")
