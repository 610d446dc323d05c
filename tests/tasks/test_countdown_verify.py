import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from spawnjoin.tasks.countdown import (
    Problem,
    StepStats,
    apr,
    expression_for,
    make_split,
    sos_plus,
    step_stats,
    verify_path,
)

P = Problem(numbers=[4, 9, 3], target=24)
PROMPT = "Moving to Node #0\nCurrent State: 24:[4, 9, 3], Operations: []\n"
PATH = (
    "Moving to Node #0\n"
    "Current State: 24:[4, 9, 3], Operations: []\n"
    "Exploring Operation: 9-3=6, Resulting Numbers: [4, 6]\n"
    "Generated Node #0,1: 24:[4, 6] Operation: 9-3=6\n"
    "Moving to Node #0,1\n"
    "Current State: 24:[4, 6], Operations: ['9-3=6']\n"
    "Exploring Operation: 4*6=24, Resulting Numbers: [24]\n"
    "24,24 equal: Goal Reached\n"
)
CHILD_PATH = (
    "Moving to Node #0,1\n"
    "Current State: 24:[4, 6], Operations: ['9-3=6']\n"
    "Exploring Operation: 4*6=24, Resulting Numbers: [24]\n"
    "24,24 equal: Goal Reached\n"
)
BEFORE_SPAWN = (
    PROMPT + "Exploring Operation: 9+3=12, Resulting Numbers: [4, 12]\n"
    "Generated Node #0,0: 24:[4, 12] Operation: 9+3=12\n"
    "Exploring Operation: 9-3=6, Resulting Numbers: [4, 6]\n"
    "Generated Node #0,1: 24:[4, 6] Operation: 9-3=6\n"
)
JOIN = (
    "<Sub Searches>\n<No Solution in Sub Search 0 at level 1 at Node #0,0>\n"
    "<Goal Reached in Sub Search 1 at level 1 at Node #0,1>\n" + CHILD_PATH + "<End Sub Searches>\n"
)
ROOT_TEXT = BEFORE_SPAWN + JOIN + "24,24 equal: Goal Reached\n" + PATH


def test_valid_root_text_verifies_with_operations_and_expression():
    v = verify_path(P, ROOT_TEXT)
    assert v.ok, v.reason
    assert v.operations == ["9-3=6", "4*6=24"]
    assert v.expression == "4*(9-3)"
    assert eval(v.expression) == 24


def test_final_path_alone_and_without_generated_lines_verifies():
    assert verify_path(P, PATH).ok
    no_generated = PATH.replace("Generated Node #0,1: 24:[4, 6] Operation: 9-3=6\n", "")
    assert verify_path(P, no_generated).ok


@pytest.mark.parametrize(
    ("old", "new", "why"),
    [
        ("4*6=24, Resulting Numbers: [24]\n24,24", "4*6=25, Resulting Numbers: [25]\n24,24", "wrong"),
        ("9-3=6, Resulting Numbers: [4, 6]", "9-3=7, Resulting Numbers: [4, 6]", "wrong"),
        ("9-3=6, Resulting Numbers: [4, 6]", "9-3=6, Resulting Numbers: [4, 7]", "resulting numbers"),
        ("Exploring Operation: 9-3=6", "Exploring Operation: 8-2=6", "not both available"),
        ("Exploring Operation: 9-3=6", "Exploring Operation: 3-9=6", "wrong"),
        ("Current State: 24:[4, 6], Operations: ['9-3=6']", "Current State: 24:[4, 8], Operations: ['9-3=6']",
         "state numbers"),
        ("Current State: 24:[4, 6], Operations: ['9-3=6']", "Current State: 24:[4, 6], Operations: []",
         "state operations"),
        ("Moving to Node #0,1\nCurrent State", "Moving to Node #0,2\nCurrent State", "expected #0,1"),
    ],
)
def test_corrupted_final_path_is_rejected(old, new, why):
    text = BEFORE_SPAWN + JOIN + "24,24 equal: Goal Reached\n" + PATH.replace(old, new)
    v = verify_path(P, text)
    assert not v.ok
    assert why in v.reason


def test_false_goal_claim_is_rejected():
    # 4+6=10 is right, but the state is [10], not [24]
    path = PATH.replace("4*6=24, Resulting Numbers: [24]", "4+6=10, Resulting Numbers: [10]")
    v = verify_path(P, BEFORE_SPAWN + JOIN + "24,24 equal: Goal Reached\n" + path)
    assert not v.ok and "Goal Reached" in v.reason
    # the same for a goal line claiming the wrong value
    v = verify_path(P, PATH.replace("24,24 equal", "10,24 equal"))
    assert not v.ok


def test_copied_child_claim_with_wrong_parent_arithmetic_is_rejected():
    # The parent copies the child's (correct) claim, but its own path from the root has a wrong first step.
    bad_path = PATH.replace("9-3=6, Resulting Numbers: [4, 6]", "9-4=6, Resulting Numbers: [3, 6]")
    v = verify_path(P, BEFORE_SPAWN + JOIN + "24,24 equal: Goal Reached\n" + bad_path)
    assert not v.ok
    # Under the reference's rule, writing only the child's path (not from the root) after the join is not a
    # solution either; under the `node` rule it is, because its operations list is replayed (next test).
    v = verify_path(P, BEFORE_SPAWN + JOIN + "24,24 equal: Goal Reached\n" + CHILD_PATH, rule="root")
    assert not v.ok and "root" in v.reason
    # Nor is stopping right after the join: the child's claim inside the join block does not count.
    assert not verify_path(P, BEFORE_SPAWN + JOIN).ok


def test_node_rule_replays_the_listed_operations_of_a_path_from_any_node():
    text = BEFORE_SPAWN + JOIN + "24,24 equal: Goal Reached\n" + CHILD_PATH
    v = verify_path(P, text)
    assert v.ok, v.reason
    assert v.operations == ["9-3=6", "4*6=24"] and v.expression == "4*(9-3)"
    for old, new, why in [
        ("Operations: ['9-3=6']", "Operations: ['9-3=7']", "is wrong"),
        ("Operations: ['9-3=6']", "Operations: ['8-2=6']", "not both available"),
        ("Operations: ['9-3=6']", "Operations: ['9-3=6', '4+6=10']", "state numbers"),
        ("Operations: ['9-3=6']", "Operations: ['9-3=6'", "expected 'Current State"),
        ("Operations: ['9-3=6']", "Operations: ['9-3']", "malformed"),
        ("Current State: 24:[4, 6]", "Current State: 24:[4, 9]", "state numbers"),
    ]:
        bad = BEFORE_SPAWN + JOIN + "24,24 equal: Goal Reached\n" + CHILD_PATH.replace(old, new)
        v = verify_path(P, bad)
        assert not v.ok and why in v.reason, (new, v.reason)
    # Every line written after the previous goal line is checked: a full path from Node #0 whose first step is
    # wrong fails even though its last node lists the right operations.
    bad_first = PATH.replace("9-3=6, Resulting Numbers: [4, 6]", "9-3=7, Resulting Numbers: [4, 6]")
    assert not verify_path(P, BEFORE_SPAWN + JOIN + "24,24 equal: Goal Reached\n" + bad_first).ok
    with pytest.raises(ValueError, match="rule"):
        verify_path(P, text, rule="any")  # type: ignore[arg-type]


def test_root_rule_passes_imply_node_rule_passes():
    for text in (ROOT_TEXT, PATH, ROOT_TEXT + "Exit Sub Search at level 1\n"):
        assert verify_path(P, text, rule="root").ok and verify_path(P, text, rule="node").ok


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), numbers=st.sampled_from([3, 4]), style=st.sampled_from(["apr", "sos"]))
def test_node_format_demonstrations_verify_only_under_the_node_rule(seed, numbers, style):
    problem = make_split("validation", 1, numbers=numbers, seed=seed)[0]
    if style == "apr":
        tree = apr(problem, beam_size=3, spawn_prob=1.0, spawn_levels=2, final_path="node", seed=seed)
    else:
        tree = sos_plus(problem, beam_size=3, final_path="node", seed=seed)
    assume(tree.solved)
    text = tree.root.text
    assert verify_path(problem, text).ok
    tail = text[text.rfind("equal: Goal Reached", 0, len(text) - 30):]
    if tail.count("Moving to Node") == 1 and "Moving to Node #0\n" not in tail:
        assert not verify_path(problem, text, rule="root").ok


def test_missing_goal_and_trailing_text_are_rejected():
    assert not verify_path(P, BEFORE_SPAWN + "No solution found.\n").ok
    assert not verify_path(P, ROOT_TEXT + "Exploring Operation: 4+6=10, Resulting Numbers: [10]\n").ok
    assert not verify_path(P, "").ok
    assert verify_path(P, ROOT_TEXT + "\n\n").ok
    assert verify_path(P, ROOT_TEXT + "Exit Sub Search at level 1\n").ok  # SoS+ ends inside a sub-search


def test_verifier_uses_the_given_problem():
    assert not verify_path(Problem(numbers=[4, 9, 2], target=24), ROOT_TEXT).ok
    assert not verify_path(Problem(numbers=[4, 9, 3], target=25), ROOT_TEXT).ok


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), numbers=st.sampled_from([3, 4]), line=st.integers(0, 50),
       delta=st.integers(1, 7), style=st.sampled_from(["apr", "sos"]))
def test_changing_any_result_in_a_solved_final_path_is_rejected(seed, numbers, line, delta, style):
    problem = make_split("validation", 1, numbers=numbers, seed=seed)[0]
    solve = apr if style == "apr" else sos_plus
    tree = solve(problem, beam_size=4, seed=seed)
    assume(tree.solved)
    text = tree.root.text
    start = text.rfind("Moving to Node #0\n")
    head, path = text[:start], text[start:]
    ops = list(re.finditer(r"(Exploring Operation: \d+[-+*/]\d+=)(\d+)", path))
    m = ops[line % len(ops)]
    corrupted = path[: m.start(2)] + str(int(m.group(2)) + delta) + path[m.end(2) :]
    assert verify_path(problem, text).ok
    assert not verify_path(problem, head + corrupted).ok


def test_expression_for():
    p = Problem(numbers=[4, 4, 9, 3], target=24)
    assert expression_for(p, ["9/3=3", "4+4=8", "3*8=24"]) == "(9/3)*(4+4)"
    with pytest.raises(ValueError):
        expression_for(p, ["9/2=4"])
    with pytest.raises(ValueError):
        expression_for(p, ["7+3=10"])
    with pytest.raises(ValueError):
        expression_for(p, ["nonsense"])


def test_step_stats_counts_by_operator():
    text = (
        PROMPT
        + "Exploring Operation: 9+3=12, Resulting Numbers: [4, 12]\n"  # right
        + "Exploring Operation: 9*3=28, Resulting Numbers: [4, 28]\n"  # wrong arithmetic, consistent list
        + "Exploring Operation: 9-3=6, Resulting Numbers: [4, 7]\n"  # right, inconsistent list
        + "Exploring Operation: 9/4=2, Resulting Numbers: [3, 2]\n"  # inexact division
        + "Exploring Operation: 8/2=4, Resulting Numbers: [4, 9, 3]\n"  # operands unavailable
    )
    s = step_stats(text)
    assert s.steps == 5 and s.correct == 3
    assert (s.by_operator["+"].total, s.by_operator["+"].correct) == (1, 1)
    assert (s.by_operator["*"].total, s.by_operator["*"].correct) == (1, 0)
    assert (s.by_operator["/"].total, s.by_operator["/"].correct) == (2, 1)
    assert s.by_operator["/"].accuracy == 0.5
    assert s.operands_available == 4
    assert s.results_consistent == 3
    both = s + s
    assert both.steps == 10 and both.by_operator["/"].total == 4
    assert StepStats().arithmetic_accuracy == 0.0


def test_state_reachable_needs_a_true_state_that_can_still_reach_the_target():
    from spawnjoin.tasks.countdown import state_reachable

    p = Problem(numbers=[4, 9, 3, 2], target=24)
    assert state_reachable(p, "Moving to Node #0,0\nCurrent State: 24:[4, 3, 18], Operations: ['9*2=18']\n")
    assert state_reachable(p, "Current State: 24:[9, 3, 8], Operations: ['4*2=8']\n")
    assert state_reachable(p, PROMPT.replace("[4, 9, 3]", "[4, 9, 3, 2]"))  # the root's own state
    # 9*2 is 18, not 17: the numbers do not follow from the listed operation
    assert not state_reachable(p, "Current State: 24:[4, 3, 18], Operations: ['9*2=17']\n")
    assert not state_reachable(p, "Current State: 24:[4, 3, 17], Operations: ['9*2=18']\n")
    assert not state_reachable(p, "Current State: 24:[4, 3, 18], Operations: ['6*3=18']\n")  # operands not there
    assert not state_reachable(p, "Current State: 25:[4, 3, 18], Operations: ['9*2=18']\n")  # another target
    # a true state from which 24 cannot be made any more (4, 3 and 7)
    assert not state_reachable(p, "Current State: 24:[4, 3, 7], Operations: ['9-2=7']\n")
    assert not state_reachable(p, "Moving to Node #0,0\n")  # no state line
