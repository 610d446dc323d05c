import json
import subprocess
import sys

import datasets
import pytest

from spawnjoin.tasks.countdown import TraceTree, make_split, verify_path
from training.cli import COMMANDS, build_parser, main
from training.data import BeamRange, token_budget_bin


def run_data(tmp_path, *extra):
    out = tmp_path / "data"
    assert main(["data", "countdown", "--n", "30", "--out", str(out), "--quiet", *extra]) == 0
    return out


def load(path):
    return datasets.load_dataset("json", data_files={"x": str(path)})["x"]


def test_apr_dataset_loads_and_matches_the_trees(tmp_path):
    out = run_data(tmp_path, "--split", "train", "--numbers", "3", "--seed", "5")
    rows = load(out / "train.jsonl")
    trees = [TraceTree.model_validate_json(line) for line in (out / "train.trees.jsonl").read_text().splitlines()]
    assert len(trees) == 30
    assert len(rows) == sum(1 for t in trees for _ in t.calls())
    assert {"prompt", "completion", "problem_id", "thread_path", "role"} <= set(rows.column_names)
    assert set(rows["role"]) == {"parent", "child"}
    assert all(len(t.problem.numbers) == 3 for t in trees)
    # the parent's last call verifies exactly when the tree is solved
    finals = {}
    for r in rows:
        if r["role"] == "parent":
            finals[r["problem_id"]] = r
    for tree in trees:
        last = finals[tree.problem.id]
        assert verify_path(tree.problem, last["prompt"] + last["completion"]).ok == tree.solved
    meta = json.loads((out / "train.meta.json").read_text())
    assert meta["trees"] == 30 and meta["rows"] == len(rows)
    assert (out / "tokenizer" / "tokenizer.json").exists()


def test_output_is_reproducible_and_splits_do_not_leak(tmp_path):
    a = run_data(tmp_path / "a", "--split", "test", "--no-trees", "--no-tokenizer")
    b = run_data(tmp_path / "b", "--split", "test", "--no-trees", "--no-tokenizer")
    assert (a / "test.jsonl").read_text() == (b / "test.jsonl").read_text()
    assert not (a / "test.trees.jsonl").exists() and not (a / "tokenizer").exists()
    test_ids = set(load(a / "test.jsonl")["problem_id"])
    train_ids = {p.id for p in make_split("train", 3000)}
    assert test_ids and not test_ids & train_ids


def test_sos_style_one_row_per_tree_with_token_budget(tmp_path):
    out = run_data(tmp_path, "--style", "sos", "--token-budget", "--no-tokenizer", "--split", "validation")
    rows = load(out / "validation.jsonl")
    assert len(rows) == 30
    assert set(rows["role"]) == {"parent"} and set(rows["style"]) == {"sos"}
    assert all(p.startswith("Token Budget: ") for p in rows["prompt"])
    budgets = {int(p.split()[2]) for p in rows["prompt"]}
    assert budgets <= {512 * k for k in range(1, 9)}


def test_solved_only_and_sub_call_budget(tmp_path):
    out = run_data(tmp_path, "--solved-only", "--sub-call-budget", "--no-tokenizer", "--beam", "3",
                   "--sub-beam", "3-4", "--spawn-prob", "1.0")
    trees = [TraceTree.model_validate_json(x) for x in (out / "train.trees.jsonl").read_text().splitlines()]
    assert len(trees) == 30 and all(t.solved for t in trees)
    assert all(t.beam_size == 3 and t.sub_call_beam_size in (3, 4) for t in trees)
    for t in trees:
        assert t.root.calls[0].context.startswith(f"Sub Call Budget: {t.num_children} Moving to Node #0\n")


def test_spawn_levels_two_makes_every_state_of_three_numbers_spawn(tmp_path):
    out = run_data(tmp_path, "--numbers", "4", "--beam", "3", "--sub-beam", "3", "--spawn-prob", "1.0",
                   "--spawn-levels", "2", "--no-tokenizer")
    trees = [TraceTree.model_validate_json(x) for x in (out / "train.trees.jsonl").read_text().splitlines()]
    assert all({t.level for t in tree.threads()} == {0, 1, 2} for tree in trees)
    # 1 root + 3 children + 3 grandchildren each: the children spawned instead of searching on
    assert {tree.num_children for tree in trees} == {12}
    rows = load(out / "train.jsonl")
    grandchild = [r for r in rows if r["thread_path"].count(".") == 2]
    assert grandchild and all(r["prompt"].count("'") == 4 for r in grandchild)  # two operations done
    default = run_data(tmp_path / "one", "--numbers", "4", "--beam", "3", "--sub-beam", "3", "--spawn-prob", "1.0")
    trees = [TraceTree.model_validate_json(x) for x in (default / "train.trees.jsonl").read_text().splitlines()]
    assert {tree.num_children for tree in trees} == {3}


def test_final_path_node_shortens_what_follows_a_goal(tmp_path):
    args = ("--split", "train", "--numbers", "4", "--seed", "3", "--spawn-prob", "1.0", "--spawn-levels", "2")
    node = load(run_data(tmp_path / "node", *args, "--final-path", "node") / "train.jsonl")
    root = load(run_data(tmp_path / "root", *args) / "train.jsonl")
    assert len(node) == len(root)  # the same searches and calls
    after_join = [r for r in node if "<End Sub Searches>" in r["prompt"] and r["completion"].startswith(
        tuple(f"{t},{t} equal: Goal Reached" for t in range(10, 101)))]
    assert after_join
    for r in after_join:  # a parent after a successful join copies the winning entry's four lines
        path = r["completion"].split("\n", 1)[1]
        assert path.count("\n") == 4 and path in r["prompt"]
    assert sum(map(len, node["completion"])) < sum(map(len, root["completion"]))
    with pytest.raises(SystemExit):
        main(["data", "countdown", "--out", str(tmp_path / "x"), "--final-path", "leaf"])


def test_beam_range_and_budget_bins():
    assert BeamRange.parse("3") == BeamRange(low=3, high=3)
    r = BeamRange.parse("1-5")
    import random

    rng = random.Random(0)
    draws = {r.draw(rng) for _ in range(300)}
    assert draws == {1, 2, 3, 4, 5}
    assert {r.draw(rng, floor=4) for _ in range(100)} == {4, 5}
    assert BeamRange.parse("2").draw(rng, floor=4) == 4
    assert [token_budget_bin(n) for n in (1, 512, 513, 4000, 9000)] == [512, 512, 1024, 4096, 4096]


def test_cli_registry_and_errors(tmp_path, capsys):
    assert "training.data" in COMMANDS
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "countdown", "--style", "tot", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        parser.parse_args(["nope"])
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "countdown", "--beam", "0-3", "--out", str(tmp_path)])
    assert "beam must be N or MIN-MAX" in capsys.readouterr().err
    args = parser.parse_args(["data", "countdown", "--out", str(tmp_path)])
    assert args.command == "data" and callable(args.run)


def test_importing_training_does_not_import_torch():
    code = "import sys, training, training.cli, training.data, training.tokenizer; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_console_script_runs(tmp_path):
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "training.cli", "data", "countdown", "--n", "5", "--out", str(out),
           "--quiet", "--no-tokenizer", "--numbers", "3"]
    subprocess.run(cmd, check=True, capture_output=True)
    assert len((out / "train.trees.jsonl").read_text().splitlines()) == 5
