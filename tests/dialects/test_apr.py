"""The APR dialect: exact format, child contexts, join text, and robustness to arbitrary text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from spawnjoin.dialects import APRDialect, ChildOutcome, Done, Spawn
from spawnjoin.dialects.apr import SPAWN_CLOSE

D = APRDialect()
ROOT = "Moving to Node #0\nCurrent State: 24:[4, 9, 3], Operations: []\n"
TEXT = (
    "Exploring Operation: 9/3=3, Resulting Numbers: [4, 3]\n"
    "Generated Node #0,0: 24:[4, 3] Operation: 9/3=3\n"
    "Exploring Operation: 9-3=6, Resulting Numbers: [4, 6]\n"
    "Generated Node #0,1: 24:[4, 6] Operation: 9-3=6\n"
    "<Calling Sub Searches>\n"
    "<Start Sub Search 0 at level 1> Moving to Node #0,0\n"
    "<Start Sub Search 1 at level 1> Moving to Node #0,1\n"
    "<End Calling Sub Searches>"
)


def test_spawn_rebuilds_child_contexts_from_generated_node_lines() -> None:
    decision = D.after_call(ROOT, TEXT, "stop")
    assert isinstance(decision, Spawn)
    assert [c.prompt for c in decision.children] == [
        "Moving to Node #0,0\nCurrent State: 24:[4, 3], Operations: ['9/3=3']\n",
        "Moving to Node #0,1\nCurrent State: 24:[4, 6], Operations: ['9-3=6']\n",
    ]


def test_nested_child_contexts_carry_the_whole_operation_path() -> None:
    ctx = "Moving to Node #0,1\nCurrent State: 24:[4, 6, 2], Operations: ['9-3=6']\n"
    text = (
        "Exploring Operation: 6-2=4, Resulting Numbers: [4, 4]\n"
        "Generated Node #0,1,0: 24:[4, 4] Operation: 6-2=4\n"
        "<Calling Sub Searches>\n<Start Sub Search 0 at level 2> Moving to Node #0,1,0\n<End Calling Sub Searches>"
    )
    decision = D.after_call(ctx, text, "stop")
    assert isinstance(decision, Spawn)
    assert decision.children[0].prompt == (
        "Moving to Node #0,1,0\nCurrent State: 24:[4, 4], Operations: ['9-3=6', '6-2=4']\n"
    )


def test_join_replaces_the_spawn_block_with_sub_search_results() -> None:
    decision = D.after_call(ROOT, TEXT, "stop")
    assert isinstance(decision, Spawn)
    path = "Moving to Node #0,1\nCurrent State: 24:[4, 6], Operations: ['9-3=6']\n24,24 equal: Goal Reached\n"
    outcomes = [
        ChildOutcome(index=0, label="a", status="done", prompt="p0", result=None),
        ChildOutcome(index=1, label="b", status="done", prompt="p1", result=path),
    ]
    joined = D.join(ROOT, TEXT, decision, outcomes)
    assert joined == (
        ROOT
        + TEXT[: TEXT.index("<Calling")]
        + "<Sub Searches>\n<No Solution in Sub Search 0 at level 1 at Node #0,0>\n"
        + "<Goal Reached in Sub Search 1 at level 1 at Node #0,1>\n"
        + path
        + "<End Sub Searches>\n"
    )


def test_child_result_is_the_text_after_the_second_to_last_goal() -> None:
    prompt = "Moving to Node #0,1\nCurrent State: 24:[4, 6], Operations: ['9-3=6']\n"
    path = prompt + "Exploring Operation: 4*6=24, Resulting Numbers: [24]\n24,24 equal: Goal Reached\n"
    transcript = prompt + "Exploring Operation: 4*6=24, Resulting Numbers: [24]\n24,24 equal: Goal Reached\n" + path
    assert D.child_result(transcript[len(prompt):]) == path
    assert D.child_result("No solution found.\n") is None
    # one claim without the repeated path is not a result
    assert D.child_result("24,24 equal: Goal Reached\n") is None


def test_sub_call_budget_prefix() -> None:
    assert APRDialect(sub_call_budget=8).root_prompt(ROOT) == "Sub Call Budget: 8 " + ROOT
    assert APRDialect().root_prompt(ROOT) == ROOT


def test_text_without_a_spawn_block_finishes() -> None:
    assert D.after_call(ROOT, "No solution found.\n", "eos") == Done()
    done = D.after_call(ROOT, "Exploring", "length")
    assert isinstance(done, Done) and done.reason == "stopped: length"


line = st.sampled_from(
    [
        "<Calling Sub Searches>",
        "<End Calling Sub Searches>",
        "<Start Sub Search 0 at level 1> Moving to Node #0,0",
        "<Start Sub Search 1 at level 1> Moving to Node #0,1",
        "<Start Sub Search 1 at level 1> Moving to Node #0,0",
        "Generated Node #0,0: 24:[4, 3] Operation: 9/3=3",
        "Generated Node #0,1: 24:[4, 6] Operation: 9-3=6",
        "Generated Node #0,1: 24:[4, 6 Operation: 9-3=6",
        "Current State: 24:[4, 6], Operations: ['x'",
        "Current State: 24:[4, 6], Operations: [1, 2]",
        "",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(line, st.text(max_size=30)), max_size=12), st.sampled_from(["stop", "eos", "length"]))
def test_any_text_gives_a_spawn_or_done_never_an_error(lines: list[str], reason: str) -> None:
    text = "\n".join(lines)
    if reason == "stop":
        text += "\n" + SPAWN_CLOSE
    decision = D.after_call(ROOT, text, reason)
    assert isinstance(decision, (Spawn, Done))
    if isinstance(decision, Spawn):
        assert decision.children
        for child in decision.children:
            assert child.prompt.startswith("Moving to Node #0,")
            assert "\nCurrent State: 24:[" in child.prompt and child.prompt.endswith("\n")
        outcomes = [
            ChildOutcome(index=i, label=c.label, status="skipped", prompt=c.prompt)
            for i, c in enumerate(decision.children)
        ]
        joined = D.join(ROOT, text, decision, outcomes)
        assert joined.count("<No Solution in Sub Search") == len(decision.children)
        assert joined.endswith("<End Sub Searches>\n")
    else:
        assert decision.malformed == ("malformed" in (decision.reason or ""))
        if not text.endswith("<End Calling Sub Searches>"):
            assert not decision.malformed
