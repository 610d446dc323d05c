"""Evaluation: a handful of held-out problems solved through the runtime give a well-formed report and plots."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from spawnjoin.backends.scripted import ScriptedBackend
from spawnjoin.tasks.countdown import apr, make_split, root_prompt, solvable
from spawnjoin.tasks.countdown.verify import STATE_RE
from training.evaluate import EvalConfig, evaluate


def _replay_backend(numbers: int, n: int, *, sabotage_every: int = 0, final_path: str = "root") -> ScriptedBackend:
    """Answers every call of the APR solver's trees for the first n test problems; optionally every k-th root
    continuation claims a wrong path, so the report has failures too."""
    answers = {}
    for i, problem in enumerate(make_split("test", n, numbers=numbers)):
        tree = apr(problem, beam_size=5, sub_call_beam_size=5, spawn_prob=1.0, final_path=final_path, seed=i)
        answers.update({c.context: c.target for t in tree.threads() for c in t.calls})
    seen = {"roots": 0}

    def handler(request):
        if request.prompt not in answers:
            return "No solution found.\n"
        if sabotage_every and "<Sub Searches>" in request.prompt:
            seen["roots"] += 1
            if seen["roots"] % sabotage_every == 0:
                return "Moving to Node #0\n1,2 equal: Goal Reached\n"
        return answers[request.prompt]

    return ScriptedBackend(handler)


def _child_state(child) -> tuple[list[int], int]:
    """A solver child's opening state: its numbers and the target, from its first call's last `Current State`."""
    target, numbers = STATE_RE.findall(child.calls[0].context)[-1][:2]
    return [int(x) for x in numbers.split(", ")], int(target)


def _solver_trees(problems: list) -> list:
    """The solver's trees that `_replay_backend` replays (its default final path), one per problem."""
    return [apr(p, beam_size=5, sub_call_beam_size=5, spawn_prob=1.0, seed=i) for i, p in enumerate(problems)]


def _solver_solved(problems: list) -> dict[str, bool]:
    """Whether the solver's tree (what `_replay_backend` replays) solves each problem, by root prompt."""
    return {root_prompt(p): tree.solved for p, tree in zip(problems, _solver_trees(problems), strict=True)}


async def test_report_is_well_formed(tmp_path):
    cfg = EvalConfig(model="scripted", numbers=3, n=6, out=str(tmp_path / "report.json"),
                     traces_dir=str(tmp_path / "traces"))
    report = await evaluate(cfg, backend=_replay_backend(3, 6, sabotage_every=3))
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["problems"] == report["problems"] == 6
    assert 0.0 < report["accuracy"] < 1.0
    assert report["pass@1"] == report["accuracy"]
    for row in report["results"]:
        assert row["total_tokens"] >= row["sequential_tokens"] > 0
        assert row["latency"] >= 0 and row["threads"] >= 1
        assert row["correct"] == (row["reasons"][0] == "ok")
    assert report["mean_threads"] > 1  # the replayed solver trees spawn children
    assert report["steps"]["steps"] > 0 and report["steps"]["arithmetic_accuracy"] == 1.0  # solver arithmetic
    assert report["malformed_spawn_share"] == 0
    assert len(list((tmp_path / "traces").glob("*.json"))) == 6
    assert report["first_step_operands_available"] == 1.0
    assert 0 < report["root_steps"]["steps"] < report["steps"]["steps"]  # children's steps are the rest
    assert report["root_steps"]["operands_available"] == 1.0


async def test_root_steps_and_first_step_reading_are_reported_apart(tmp_path):
    """A root whose first step uses a number that is not in its state is counted, and only against the root."""
    problems = make_split("test", 4, numbers=3)
    honest = _replay_backend(3, 4)
    roots = {root_prompt(p) for p in problems}

    def handler(request):
        text = honest._handler(request)
        if request.prompt in roots and len(roots) > 2:
            roots.discard(request.prompt)  # misread the first two roots' first operand: 1000 is in no state
            first = text.index("Exploring Operation: ") + len("Exploring Operation: ")
            end = first + next(i for i, c in enumerate(text[first:]) if not c.isdigit())
            text = text[:first] + "1000" + text[end:]
        return text

    report = await evaluate(EvalConfig(model="scripted", numbers=3, n=4), backend=ScriptedBackend(handler))
    assert report["first_step_operands_available"] == 0.5
    flags = [row["first_step_operands_available"] for row in report["results"]]
    assert sorted(flags) == [False, False, True, True]
    root, steps = report["root_steps"], report["steps"]
    missing = round((1 - root["operands_available"]) * root["steps"])
    assert missing == 2 == round((1 - steps["operands_available"]) * steps["steps"])  # children read theirs right


async def test_root_spawn_share_and_goals_lost_after_the_join():
    """Roots that answer without spawning, and roots that drop a goal their children found, are counted."""
    problems = make_split("test", 6, numbers=3)
    solved = _solver_solved(problems)
    serial = {root_prompt(p) for p in problems[:2]}
    honest = _replay_backend(3, 6)

    def handler(request):
        if request.prompt in serial:
            return "No solution found.\n"  # the root gives up without spawning
        if "<Sub Searches>" in request.prompt:
            return "Moving to Node #0\n1,2 equal: Goal Reached\n"  # every join is followed by a wrong path
        return honest._handler(request)

    report = await evaluate(EvalConfig(model="scripted", numbers=3, n=6), backend=ScriptedBackend(handler))
    assert report["accuracy"] == 0
    assert [row["root_spawned"] for row in report["results"]] == [False, False, True, True, True, True]
    assert report["root_spawn_share"] == round(4 / 6, 3)
    lost = sum(solved[root_prompt(p)] for p in problems[2:])
    assert lost > 0
    assert report["child_goal_lost_share"] == round(lost / 6, 3)
    assert [row["child_goal"] for row in report["results"]][2:] == [solved[root_prompt(p)] for p in problems[2:]]
    # the solver's children are right, so every claimed goal also verifies
    assert report["child_goal_verified_lost_share"] == report["child_goal_lost_share"]


async def test_a_wrong_child_claim_is_not_counted_as_a_verified_goal():
    problems = make_split("test", 4, numbers=3)
    honest = _replay_backend(3, 4)

    def handler(request):
        reply = honest._handler(request)
        if "<Sub Searches>" in request.prompt:
            return "No solution found.\n"
        if request.prompt.startswith("Moving to Node #0,"):  # a child: keep its claims, break their arithmetic
            reply = reply.replace("Resulting Numbers: [", "Resulting Numbers: [1, ")
        return reply

    report = await evaluate(EvalConfig(model="scripted", numbers=3, n=4), backend=ScriptedBackend(handler))
    assert report["child_goal_lost_share"] > 0
    assert report["child_goal_verified_lost_share"] == 0
    assert len(problems) == report["problems"]


async def test_samples_pass_at_n_and_self_consistency(tmp_path):
    cfg = EvalConfig(model="scripted", numbers=3, n=3, samples=2, temperature=1.0)
    report = await evaluate(cfg, backend=_replay_backend(3, 3, sabotage_every=2))
    assert report["pass@2"] >= report["accuracy"]
    for row in report["results"]:
        assert len(row["statuses"]) == 2


async def test_malformed_spawns_are_counted_in_every_sample():
    """With 2 samples per problem and the second request of each root prompt misnumbering its spawn block, the
    first-sample share counts what sample 0 did and the all-samples share counts every solve."""
    honest = _replay_backend(3, 4)
    requests: Counter[str] = Counter()
    roots = {root_prompt(p) for p in make_split("test", 4, numbers=3)}

    def handler(request):
        reply = honest._handler(request)
        if request.prompt in roots:
            requests[request.prompt] += 1
            if requests[request.prompt] == 2 and "<Start Sub Search 0 at" in reply:
                return reply.replace("<Start Sub Search 0 at", "<Start Sub Search 1 at", 1)
        return reply

    cfg = EvalConfig(model="scripted", numbers=3, n=4, samples=2, temperature=1.0)
    report = await evaluate(cfg, backend=ScriptedBackend(handler))
    per_sample = [row["malformed_spawns_per_sample"] for row in report["results"]]
    assert [sorted(counts) for counts in per_sample] == [[0, 1]] * 4  # every root spawns; one solve of each broke
    assert report["malformed_spawn_share_all_samples"] == 0.5
    assert [row["malformed_spawns"] for row in report["results"]] == [counts[0] for counts in per_sample]
    assert report["malformed_spawn_share"] == sum(counts[0] for counts in per_sample) / 4


async def test_path_rules_score_node_format_answers():
    """Node-format roots copy the join's last node: `node` accepts them, `root` does not, and the report says so."""
    node = await evaluate(EvalConfig(model="scripted", numbers=3, n=6), backend=_replay_backend(3, 6, final_path="node"))
    solved = [r for r in node["results"] if r["correct"]]
    assert solved and node["accuracy"] > node["accuracy_root_rule"]
    # the vote for self-consistency reads the whole claimed path, including the operations listed in its first node
    from training.evaluate import _claimed_operations

    text = ("<End Sub Searches>\n24,24 equal: Goal Reached\nMoving to Node #0,1\n"
            "Current State: 24:[4, 6], Operations: ['9-3=6']\nExploring Operation: 4*6=24, Resulting Numbers: [24]\n"
            "24,24 equal: Goal Reached\n")
    assert _claimed_operations(text) == ("9-3=6", "4*6=24")
    root = await evaluate(EvalConfig(model="scripted", numbers=3, n=6, path_rule="root"),
                          backend=_replay_backend(3, 6))
    assert root["accuracy"] == root["accuracy_root_rule"] > 0
    with pytest.raises(ValueError, match="path_rule"):
        EvalConfig(model="m", path_rule="leaf")


def test_train_split_is_refused():
    with pytest.raises(ValueError, match="train split"):
        EvalConfig(model="m", split="train")


def test_plots(tmp_path):
    pytest.importorskip("matplotlib")
    from training.plots import plot_eval

    reports = [
        {"name": "apr", "accuracy": 0.4, "mean_total_tokens": 3000, "mean_sequential_tokens": 900,
         "mean_latency_s": 2.0, "config": {"numbers": 4, "samples": 1},
         "results": [{"correct": True, "total_tokens": 2000, "sequential_tokens": 800, "latency": 1.5},
                     {"correct": False, "total_tokens": 4000, "sequential_tokens": 1000, "latency": 2.5}]},
    ]
    paths = plot_eval(reports, tmp_path)
    assert paths and all(p.exists() and p.stat().st_size > 0 for p in paths)


def test_eval_reports_take_an_optional_label(tmp_path):
    import json

    from training.plots import load_eval_reports

    (tmp_path / "a.json").write_text(json.dumps({"name": "runs/x/final", "accuracy": 0.5}))
    odd = tmp_path / "k=v.json"  # a path that holds "=" is still read as a path
    odd.write_text(json.dumps({"name": "odd"}))
    reports = load_eval_reports([str(tmp_path / "a.json"), f"APR 3n={tmp_path / 'a.json'}", str(odd)])
    assert [r["name"] for r in reports] == ["runs/x/final", "APR 3n", "odd"]
    with pytest.raises(FileNotFoundError):
        load_eval_reports([f"label={tmp_path / 'missing.json'}"])


def test_grpo_reward_curve_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    import json

    from training.plots import plot_grpo, reward_curve

    history = [{"step": s, "reward": r, "entropy": 0.1 * s, "loss": 0.0}
               for s, r in [(1, 0.0), (2, 0.25), (3, 0.5), (4, 0.25)]]
    history.append({"step": 4, "train_runtime": 10.0})  # the summary entry has no reward
    curve = reward_curve(history, window=3)
    assert [s for s, _, _ in curve] == [1, 2, 3, 4]
    assert [m for _, _, m in curve] == pytest.approx([0.0, 0.125, 0.25, 1 / 3])
    entropy = reward_curve(history, window=2, key="entropy")
    assert [v for _, v, _ in entropy] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert [m for _, _, m in entropy] == pytest.approx([0.1, 0.15, 0.25, 0.35])
    (tmp_path / "run" / "final").mkdir(parents=True)
    (tmp_path / "run" / "final" / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    paths = plot_grpo({"GRPO": tmp_path / "run"}, tmp_path / "img", window=3)
    assert [p.name for p in paths] == ["grpo_reward.png"] and paths[0].stat().st_size > 0

    # The malformed share: logged directly, or read back from the penalty reward's mean (minus the share).
    from training.plots import malformed_share_history

    penalised = [{"step": 1, "rewards/malformed_spawn_reward/mean": -0.5}, {"step": 2, "tree/malformed_share": 0.25,
                 "rewards/malformed_spawn_reward/mean": -0.75}, {"step": 3, "reward": 0.1}]
    shares = reward_curve(malformed_share_history(penalised), window=2, key="tree/malformed_share")
    assert shares == [(1, 0.5, 0.5), (2, 0.25, 0.375)]  # a logged share wins over the reward's mean
    (tmp_path / "pen" / "final").mkdir(parents=True)
    (tmp_path / "pen" / "final" / "trainer_state.json").write_text(json.dumps({"log_history": history + penalised}))
    assert plot_grpo({"GRPO": tmp_path / "run", "penalty": tmp_path / "pen"}, tmp_path / "img2")[0].exists()


async def test_time_limit_skips_problems_not_started():
    cfg = EvalConfig(model="scripted", numbers=3, n=5, concurrency=1, time_limit=1e-9)
    report = await evaluate(cfg, backend=_replay_backend(3, 5))
    assert report["problems"] + report["skipped"] == 5 and report["skipped"] >= 4


async def test_start_finishes_a_cut_off_evaluation():
    """`start` solves the rest of the split in order: the two reports together cover every problem once."""
    first = await evaluate(EvalConfig(model="scripted", numbers=3, n=5, concurrency=1), backend=_replay_backend(3, 5))
    rest = await evaluate(EvalConfig(model="scripted", numbers=3, n=5, start=3), backend=_replay_backend(3, 5))
    assert [r["problem"] for r in rest["results"]] == [r["problem"] for r in first["results"]][3:]
    assert rest["problems"] == 2 and rest["skipped"] == 0
    with pytest.raises(ValueError, match="start must be"):
        EvalConfig(model="scripted", n=5, start=5)


async def test_root_child_reachable_share_counts_roots_that_hand_a_child_a_live_state():
    """A root whose children all open on false states (its `Generated Node` lines misread) leaves no ceiling; of the
    children on live states, only those whose returned path verifies count as converted."""
    problems = make_split("test", 5, numbers=3)
    trees = _solver_trees(problems)
    solved = {root_prompt(p): tree.solved for p, tree in zip(problems, trees, strict=True)}
    misread = {root_prompt(p) for p in problems[:2]}
    honest = _replay_backend(3, 5)
    # the fourth problem's children open on the solver's states but find nothing
    lost = {k.calls[0].context for k in trees[3].root.children}

    def handler(request):
        if request.prompt in lost:
            return "No solution found.\n"
        reply = honest._handler(request)
        if request.prompt in misread:  # every child node gets a number that is in no state
            reply = reply.replace("Resulting Numbers: [", "Resulting Numbers: [1000, ")
            reply = re.sub(r"(Generated Node #[\d,]+: \d+:\[)", r"\g<1>1000, ", reply)
        return reply

    report = await evaluate(EvalConfig(model="scripted", numbers=3, n=5), backend=ScriptedBackend(handler))
    flags = [row["root_child_reachable"] for row in report["results"]]
    assert flags[:2] == [False, False]
    assert all(row["root_spawned"] for row in report["results"])
    # a root the solver solved handed some child the state that led to the goal
    assert any(solved[root_prompt(p)] for p in problems[2:])
    assert all(flags[k] for k, p in enumerate(problems) if solved[root_prompt(p)] and root_prompt(p) not in misread)
    assert report["root_child_reachable_share"] == round(sum(flags) / 5, 3)
    # the honest roots' children are the solver's: count those opening on a live state and those whose path verifies
    live = verified = 0
    for i, p in enumerate(problems):
        assert report["results"][i]["reachable_children"] >= report["results"][i]["reachable_children_verified"]
        if root_prompt(p) in misread:
            assert report["results"][i]["reachable_children"] == 0
            continue
        kids = [k for k in trees[i].root.children if solvable(*_child_state(k))]
        assert report["results"][i]["reachable_children"] == len(kids)
        live, verified = live + len(kids), verified + sum(k.solved for k in kids if i != 3)
        assert report["results"][i]["reachable_children_verified"] == (0 if i == 3 else sum(k.solved for k in kids))
    assert live > verified > 0
    assert report["reachable_child_verified_share"] == round(verified / live, 3)


async def test_problems_the_demonstration_search_solves_are_scored_apart():
    """`solver_beam` marks each problem the demonstrations' search solves and splits the accuracy along that line;
    with beam 1 some problems the (wider) replayed trees solve fall outside it, so both sides are exercised."""
    from training.data import demonstration_search_solves

    problems = make_split("test", 8, numbers=3)
    report = await evaluate(EvalConfig(model="scripted", numbers=3, n=8, solver_beam=1), backend=_replay_backend(3, 8))
    rows = report["results"]
    assert [row["solver_solved"] for row in rows] == [demonstration_search_solves(p, 1) for p in problems]
    inside = [row["correct"] for row in rows if row["solver_solved"]]
    outside = [row["correct"] for row in rows if not row["solver_solved"]]
    assert 0 < len(inside) < 8 and sum(outside) > 0
    assert report["solver_solved"] == len(inside)
    assert report["accuracy_on_solver_solved"] == round(sum(inside) / len(inside), 3)
    assert report["solved_outside_solver"] == sum(outside)
    # the default beam is the demonstrations' (3): a wider search solves at least as many of these problems
    wide = await evaluate(EvalConfig(model="scripted", numbers=3, n=8), backend=_replay_backend(3, 8))
    assert wide["solver_solved"] == sum(demonstration_search_solves(p, 3) for p in problems) >= len(inside)
    off = await evaluate(EvalConfig(model="scripted", numbers=3, n=2, solver_beam=0), backend=_replay_backend(3, 2))
    assert off["solver_solved"] is None and off["accuracy_on_solver_solved"] is None
    assert all(row["solver_solved"] is None for row in off["results"])
    with pytest.raises(ValueError, match="solver_beam"):
        EvalConfig(model="scripted", solver_beam=-1)
