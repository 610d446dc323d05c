import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spawnjoin.tasks.countdown import (
    Problem,
    TraceTree,
    apr,
    child_prompt,
    make_split,
    returned_path,
    root_prompt,
    sos_plus,
    step_stats,
    verify_path,
)
from spawnjoin.tasks.countdown.format import JOIN_CLOSE, JOIN_OPEN, SPAWN_OPEN

# Every line a solver may write (after an optional budget prefix on the first line).
LINE = re.compile(
    r"(?:Sub Call Budget: \d+ |Token Budget: \d+ )?Moving to Node #\d+(?:,\d+)*"
    r"|Current State: \d+:\[\d+(?:, \d+)*\], Operations: \[(?:'\d+[-+*/]\d+=\d+'(?:, '\d+[-+*/]\d+=\d+')*)?\]"
    r"|Exploring Operation: \d+[-+*/]\d+=\d+, Resulting Numbers: \[\d+(?:, \d+)*\]"
    r"|Generated Node #\d+(?:,\d+)+: \d+:\[\d+(?:, \d+)*\] Operation: \d+[-+*/]\d+=\d+"
    r"|\d+,\d+ (?:equal: Goal Reached|unequal: No Solution)"
    r"|No solution found\.|No solution found in sub search"
    r"|Start Sub Search at level \d+: Moving to Node #\d+(?:,\d+)*|Exit Sub Search at level \d+"
    r"|<Calling Sub Searches>|<End Calling Sub Searches>|<Sub Searches>|<End Sub Searches>"
    r"|<Start Sub Search \d+ at level \d+> Moving to Node #\d+(?:,\d+)*"
    r"|<(?:No Solution|Goal Reached) in Sub Search \d+ at level \d+ at Node #\d+(?:,\d+)*>"
)

seeds = st.integers(0, 10**6)
sizes = st.sampled_from([3, 4])
beams = st.integers(1, 6)


def problem_for(seed: int, numbers: int) -> Problem:
    return make_split("train", 1, numbers=numbers, seed=seed)[0]


def check_tree(tree: TraceTree) -> None:
    problem = tree.problem
    verdict = verify_path(problem, tree.root.text)
    assert verdict.ok == tree.solved, verdict.reason
    if verdict.ok:
        assert eval(verdict.expression) == problem.target
    for thread in tree.threads():
        assert thread.solved == (returned_path(thread.text) is not None)
        if not thread.solved:
            assert thread.text.endswith("No solution found.\n")
        for line in thread.text.splitlines():
            assert LINE.fullmatch(line), line
        stats = step_stats(thread.text)
        assert stats.steps == stats.correct == stats.operands_available == stats.results_consistent > 0
        calls = thread.calls
        for i in range(len(calls) - 1):
            # a spawn ends the call; the next context is the text before the spawn block plus the join block
            assert calls[i].target.endswith("<End Calling Sub Searches>\n")
            before = calls[i].text[: calls[i].text.rindex(SPAWN_OPEN)]
            group = thread.spawn_groups()[i]
            join = "".join(
                f"<Goal Reached in Sub Search {k} at level {c.level} at Node #{c.start_node}>\n{returned_path(c.text)}"
                if c.solved else f"<No Solution in Sub Search {k} at level {c.level} at Node #{c.start_node}>\n"
                for k, c in enumerate(group)
            )
            assert calls[i + 1].context == before + JOIN_OPEN + join + JOIN_CLOSE
        for child in thread.children:
            assert child.level == thread.level + 1
            assert child.calls[0].context == child_prompt(calls[child.spawned_at].text, child.start_node)


@settings(max_examples=150, deadline=None)
@given(seed=seeds, numbers=sizes, beam=beams, extra=st.integers(0, 4), prob=st.sampled_from([0.0, 0.5, 0.9, 1.0]))
def test_every_apr_tree_is_consistent_and_verifies(seed, numbers, beam, extra, prob):
    tree = apr(problem_for(seed, numbers), beam_size=beam, sub_call_beam_size=beam + extra, spawn_prob=prob, seed=seed)
    check_tree(tree)
    assert tree.root.calls[0].context == root_prompt(tree.problem)
    assert all(not c.children for c in tree.root.children)  # the reference nests one level
    if prob == 0.0:
        assert tree.num_children == 0 and len(tree.root.calls) == 1


@settings(max_examples=100, deadline=None)
@given(seed=seeds, numbers=sizes, beam=beams, prob=st.sampled_from([0.0, 0.5, 1.0]))
def test_every_sos_trace_verifies(seed, numbers, beam, prob):
    tree = sos_plus(problem_for(seed, numbers), beam_size=beam, sub_search_prob=prob, seed=seed)
    check_tree(tree)
    text = tree.root.calls[0].target
    assert len(tree.root.calls) == 1 and tree.num_children == 0
    starts = re.findall(r"Start Sub Search at level (\d+)", text)
    exits = re.findall(r"Exit Sub Search at level (\d+)", text)
    assert sorted(starts) == sorted(exits)
    if prob == 0.0:
        assert not starts


@settings(max_examples=80, deadline=None)
@given(seed=seeds, numbers=sizes, beam=st.integers(2, 5), levels=st.sampled_from([1, 2]))
def test_node_final_path_is_a_copy_of_the_winning_join_entry(seed, numbers, beam, levels):
    tree = apr(problem_for(seed, numbers), beam_size=beam, spawn_prob=1.0, spawn_levels=levels, final_path="node",
               seed=seed)
    check_tree(tree)
    for thread in tree.threads():
        if not thread.solved:
            continue
        path = returned_path(thread.text)
        assert path.count("Moving to Node #") == 1 and path.count("Exploring Operation") == 1
        last = thread.calls[-1]
        if len(thread.calls) > 1 and "<Goal Reached in Sub Search" in last.context:
            # after a join that reached the goal, the parent writes the goal line and copies the first winning entry
            entry = last.context.split("<Goal Reached in Sub Search", 1)[1].split(">\n", 1)[1]
            assert last.target.endswith(path) and entry.startswith(path)
    same = apr(problem_for(seed, numbers), beam_size=beam, spawn_prob=1.0, spawn_levels=levels, seed=seed)
    assert same.solved == tree.solved  # the rule changes what is written after a goal, not the search


@settings(max_examples=40, deadline=None)
@given(seed=seeds, numbers=sizes, beam=beams)
def test_sos_node_final_path_is_the_goal_node_only(seed, numbers, beam):
    tree = sos_plus(problem_for(seed, numbers), beam_size=beam, final_path="node", seed=seed)
    check_tree(tree)
    if tree.solved:
        path = returned_path(tree.root.text)
        assert path.count("Moving to Node #") == 1 and path.count("Exploring Operation") == 1
        assert not verify_path(tree.problem, tree.root.text, rule="root").ok or "Moving to Node #0\n" in path


def test_final_path_must_be_root_or_node():
    with pytest.raises(ValueError, match="final_path"):
        apr(Problem(numbers=[4, 9, 3], target=24), final_path="leaf")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="final_path"):
        sos_plus(Problem(numbers=[4, 9, 3], target=24), final_path="leaf")  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(seed=seeds, numbers=sizes, beam=st.integers(2, 6))
def test_spawn_order_generated_lists_nodes_as_written(seed, numbers, beam):
    """`spawn_order="generated"`: every spawn block names #0,0, #0,1, ... in order; the tree stays consistent."""
    tree = apr(problem_for(seed, numbers), beam_size=beam, spawn_prob=1.0, spawn_order="generated", seed=seed)
    check_tree(tree)
    for call in tree.root.calls[:-1]:
        block = call.target[call.target.rindex(SPAWN_OPEN):]
        nodes = re.findall(r"> Moving to Node #0,(\d+)", block)
        assert nodes == [str(i) for i in range(len(nodes))] and len(nodes) > 1


def test_spawn_order_heuristic_ranks_children():
    """The default keeps the reference solver's order: some spawn block is not in generated order."""
    orders = []
    for seed in range(40):
        tree = apr(problem_for(seed, 4), beam_size=4, spawn_prob=1.0, seed=seed)
        block = tree.root.calls[0].target
        orders.append(re.findall(r"> Moving to Node #0,(\d+)", block[block.rindex(SPAWN_OPEN):]))
    assert any(o != sorted(o) for o in orders)
    with pytest.raises(ValueError, match="spawn_order"):
        apr(problem_for(0, 3), spawn_order="random")  # type: ignore[arg-type]


def test_symbolic_search_solves_most_problems():
    problems3 = make_split("validation", 100, numbers=3)
    problems4 = make_split("validation", 100, numbers=4)
    assert sum(apr(p, beam_size=3, seed=0).solved for p in problems3) >= 80
    assert sum(apr(p, beam_size=5, sub_call_beam_size=10, seed=0).solved for p in problems4) >= 60


def test_spawn_prob_one_spawns_at_the_root():
    tree = apr(Problem(numbers=[5, 4, 44, 14], target=10), beam_size=3, spawn_prob=1.0, seed=0)
    first = tree.root.calls[0].target
    assert first.endswith("<End Calling Sub Searches>\n")
    assert first.count("<Start Sub Search ") == len(tree.root.spawn_groups()[0]) == first.count("Generated Node #")


def test_sub_call_budget_prefix_counts_children():
    problem = Problem(numbers=[5, 4, 44, 14], target=10)
    plain = apr(problem, beam_size=3, spawn_prob=1.0, seed=3)
    tree = apr(problem, beam_size=3, spawn_prob=1.0, seed=3, sub_call_budget=True)
    prefix = f"Sub Call Budget: {tree.num_children} "
    assert tree.num_children > 0
    assert all(c.context.startswith(prefix + "Moving to Node #0\n") for c in tree.root.calls)
    assert all(not c.context.startswith("Sub Call Budget") for t in tree.root.children for c in t.calls)
    assert [c.context for c in tree.root.calls] == [prefix + c.context for c in plain.root.calls]
    assert verify_path(problem, tree.root.text).ok == tree.solved


def test_solvers_are_deterministic_given_a_seed():
    problem = Problem(numbers=[5, 4, 44, 14], target=10)
    assert apr(problem, beam_size=4, seed=7) == apr(problem, beam_size=4, seed=7)
    assert sos_plus(problem, beam_size=4, seed=7) == sos_plus(problem, beam_size=4, seed=7)


def test_worked_example_is_byte_exact():
    """The 3-number tree printed in docs/apr-format.md."""
    tree = apr(Problem(numbers=[4, 9, 3], target=24), beam_size=2, seed=6)
    assert [c.target for c in tree.root.calls] == [
        "Exploring Operation: 9+3=12, Resulting Numbers: [4, 12]\n"
        "Generated Node #0,0: 24:[4, 12] Operation: 9+3=12\n"
        "Exploring Operation: 9-3=6, Resulting Numbers: [4, 6]\n"
        "Generated Node #0,1: 24:[4, 6] Operation: 9-3=6\n"
        "<Calling Sub Searches>\n"
        "<Start Sub Search 0 at level 1> Moving to Node #0,0\n"
        "<Start Sub Search 1 at level 1> Moving to Node #0,1\n"
        "<End Calling Sub Searches>\n",
        "24,24 equal: Goal Reached\n"
        "Moving to Node #0\n"
        "Current State: 24:[4, 9, 3], Operations: []\n"
        "Exploring Operation: 9-3=6, Resulting Numbers: [4, 6]\n"
        "Generated Node #0,1: 24:[4, 6] Operation: 9-3=6\n"
        "Moving to Node #0,1\n"
        "Current State: 24:[4, 6], Operations: ['9-3=6']\n"
        "Exploring Operation: 4*6=24, Resulting Numbers: [24]\n"
        "24,24 equal: Goal Reached\n",
    ]
    failed, solved = tree.root.children
    assert failed.calls[0].context == "Moving to Node #0,0\nCurrent State: 24:[4, 12], Operations: ['9+3=12']\n"
    assert failed.calls[0].target.endswith("No solution found.\n")
    assert solved.calls[0].target == (
        "Exploring Operation: 6-4=2, Resulting Numbers: [2]\n"
        "2,24 unequal: No Solution\n"
        "Exploring Operation: 4*6=24, Resulting Numbers: [24]\n"
        "24,24 equal: Goal Reached\n"
        "Moving to Node #0,1\n"
        "Current State: 24:[4, 6], Operations: ['9-3=6']\n"
        "Exploring Operation: 4*6=24, Resulting Numbers: [24]\n"
        "24,24 equal: Goal Reached\n"
    )


def test_tree_round_trips_through_json():
    tree = apr(Problem(numbers=[5, 4, 44, 14], target=10), beam_size=3, seed=1)
    again = TraceTree.model_validate_json(tree.model_dump_json())
    assert again == tree
    assert [t.thread_path for t in again.threads()][:2] == ["root", "root.0"]
    assert {t.role for t in again.threads()} == {"parent", "child"}


def test_docs_worked_examples_match_the_solver():
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "apr-format.md").read_text()
    trees = [
        apr(Problem(numbers=[4, 9, 3], target=24), beam_size=2, seed=6),
        apr(Problem(numbers=[5, 4, 44, 14], target=10), beam_size=2, sub_call_beam_size=2, seed=6),
    ]
    for tree in trees:
        for _, _, call in tree.calls():
            assert f"```text\n{call.context}```" in doc
            assert f"```text\n{call.target}```" in doc
    sos = sos_plus(Problem(numbers=[90, 2, 8], target=86), beam_size=2, seed=4).root.calls[0]
    assert f"```text\n{sos.context}{sos.target}```" in doc
