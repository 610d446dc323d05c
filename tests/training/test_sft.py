"""SFT: data mix, masks, config parsing, and a few training steps on a tiny model built from a config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from training.recipe import load_config  # noqa: E402
from training.sft import StageIncomplete, stage_complete, train  # noqa: E402
from training.sft_data import (  # noqa: E402
    _result_mask,
    arithmetic_rows,
    join_rows,
    load_rows,
    reading_rows,
    tokenize_rows,
)
from training.tokenizer import build_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A few 3-number APR demonstration rows written by `spawnjoin-train data`."""
    from training.cli import main

    out = tmp_path_factory.mktemp("apr3")
    assert main(["data", "countdown", "--n", "30", "--numbers", "3", "--style", "apr", "--out", str(out),
                 "--quiet", "--no-trees", "--no-tokenizer"]) == 0
    return out


def test_arithmetic_rows_follow_trace_format():
    rows = arithmetic_rows(3, lines=5, seed=1)
    assert len(rows) == 3
    for row in rows:
        lines = row.splitlines()
        assert len(lines) == 5
        for line in lines:
            lhs, rhs = line.split("=")
            op = next(c for c in "+-*/" if c in lhs)
            x, y = (int(v) for v in lhs.split(op))
            assert {"+": x + y, "-": x - y, "*": x * y, "/": x // y}[op] == int(rhs)
    assert arithmetic_rows(3, lines=5, seed=1) == rows  # reproducible


def test_result_mask_covers_results_only(tokenizer):
    ids = tokenizer("12+30=42\n7*8=56\n")["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    mask = _result_mask(tokens)
    trained = "".join(t for t, m in zip(tokens, mask, strict=True) if m)
    assert trained == "42\n56\n"


def test_tokenize_rows_masks_prompt(tokenizer, data_dir):
    rows = load_rows([str(data_dir)])
    assert rows and set(rows[0]) == {"prompt", "completion"}
    ds = tokenize_rows(rows[:4], [], tokenizer)
    for ids, mask in zip(ds["input_ids"], ds["completion_mask"], strict=True):
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert mask[0] == 0 and mask[-1] == 1
        text = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m], skip_special_tokens=True)
        assert not text.startswith("Moving to Node")  # the prompt carries no loss


def test_reading_rows_keep_only_the_lines_that_copy_a_big_state(tokenizer):
    from spawnjoin.tasks.countdown import step_stats

    calls = [
        {"prompt": "Moving to Node #0\nCurrent State: 54:[15, 8, 66], Operations: []\n",
         "completion": "Exploring Operation: 66-15=51, Resulting Numbers: [8, 51]\n"
                       "Generated Node #0,0: 54:[8, 51] Operation: 66-15=51\n"
                       "<Calling Sub Searches>\n<Start Sub Search 0 at level 1> Moving to Node #0,0\n"},
        {"prompt": "Moving to Node #0,0\nCurrent State: 54:[8, 51], Operations: ['66-15=51']\n",  # 2 numbers
         "completion": "Exploring Operation: 8+51=59, Resulting Numbers: [59]\n59,54 unequal: No Solution\n"},
        {"prompt": "...<End Sub Searches>\n", "completion": "Moving to Node #0\n"},  # a later call: no state
    ]
    rows = reading_rows(calls, 3, seed=0)
    assert rows == [{"prompt": calls[0]["prompt"], "completion": calls[0]["completion"].split("<Calling")[0]}] * 3
    stats = step_stats(rows[0]["prompt"] + rows[0]["completion"])
    assert stats.steps == 1 and stats.operands_available == 1
    assert len(reading_rows(calls, 2, min_numbers=2, seed=0)) == 2
    assert {r["prompt"] for r in reading_rows(calls, 8, min_numbers=2, seed=0)} == {c["prompt"] for c in calls[:2]}
    with pytest.raises(ValueError, match="4\\+ numbers"):
        reading_rows(calls, 1, min_numbers=4)
    # A cut call goes on after its lines: the row trains the lines but no <eos>.
    ds = tokenize_rows([], [], tokenizer, reading=rows[:1])
    ids, mask = ds["input_ids"][0], ds["completion_mask"][0]
    assert ids[-1] != tokenizer.eos_token_id and mask[-1] == 1
    trained = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    assert trained == rows[0]["completion"]


def test_join_rows_choose_whole_calls_after_a_join_that_reached_the_goal(data_dir):
    """Only calls after a join with a `Goal Reached` sub search qualify (not the spawn call, not a join of dead
    ends); they come back whole, repeated to the count asked for; the SFT data mix adds them to the calls."""
    calls = load_rows([str(data_dir)])
    chosen = join_rows(calls, 5, seed=0)
    assert len(chosen) == 5 and all(c in calls for c in chosen)
    for c in chosen:
        join = c["prompt"].rpartition("<Sub Searches>")[2]
        assert "<Goal Reached in Sub Search" in join and join.rstrip().endswith("<End Sub Searches>")
    everything = {json.dumps(c) for c in join_rows(calls, 10 * len(calls), seed=1)}
    eligible = {json.dumps(c) for c in calls} & everything
    dead_end = [c for c in calls if "<End Sub Searches>" in c["prompt"] and "<Goal Reached in Sub Search" not in
                c["prompt"].rpartition("<Sub Searches>")[2]]
    spawning = [c for c in calls if "<End Sub Searches>" not in c["prompt"]]
    assert dead_end and spawning and eligible  # the 30 demonstrations have all three kinds
    assert not any(json.dumps(c) in eligible for c in dead_end + spawning)
    assert len(join_rows(calls, 2 * len(eligible) + 1, seed=0)) == 2 * len(eligible) + 1
    with pytest.raises(ValueError, match="reached the goal"):
        join_rows(spawning, 1)
    assert join_rows(spawning, 0) == []


def test_load_rows_weights(data_dir):
    full = load_rows([str(data_dir)])
    assert len(load_rows([str(data_dir)], [0.5])) == round(0.5 * len(full))
    assert len(load_rows([str(data_dir)], [2.0])) == 2 * len(full)


def test_recipe_then_flags(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("output_dir: out\nlearning_rate: 0.002\nmodel_shape: tiny\n")
    cfg = load_config(["--recipe", str(recipe), "--learning_rate", "0.003"])
    assert cfg.learning_rate == 0.003 and cfg.model_shape == "tiny"
    assert cfg.completion_only_loss is True
    with pytest.raises(ValueError, match="unknown"):
        recipe.write_text("output_dir: out\nno_such_field: 1\n")
        load_config(["--recipe", str(recipe)])


def test_sft_loss_decreases_and_saves(tmp_path, data_dir, capsys):
    cfg = load_config(overrides={
        "output_dir": str(tmp_path / "run"),
        "model_shape": "tiny",
        "train_files": [str(data_dir)],
        "join_rows": 7,
        "arithmetic_rows": 4,
        "arithmetic_lines": 16,
        "max_length": 256,
        "max_steps": 12,
        "gradient_accumulation_steps": 1,
        "learning_rate": 3e-3,
        "warmup_steps": 0,
        "logging_steps": 1,
        "num_threads": 1,
        "save_every_minutes": 0,
        "export_dir": str(tmp_path / "export"),
    })
    final = train(cfg)
    calls = len(load_rows([str(data_dir)]))
    assert f"[sft] {calls} calls + 7 join-reading calls + 4 arithmetic rows" in capsys.readouterr().out
    state = json.loads((final / "trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json"):
        assert (final / name).exists()
        assert (tmp_path / "export" / name).exists()
    assert any("tokens_per_second" in e for e in state["log_history"])
    # the export's note is that of the final weights, not of the last periodic save
    note = json.loads((tmp_path / "export" / "training_state.json").read_text())
    assert note["global_step"] == 12 and note["tokens_seen"] == state["num_input_tokens_seen"] > 0


def test_pack_causal_rows_keeps_every_call_and_its_mask():
    """Causal packing puts whole calls side by side in rows of `max_length` tokens, masks aligned."""
    from datasets import Dataset

    from training.sft_data import pack_causal_rows

    # Token ids >= 100 are "completion" tokens, so a misaligned mask is visible.
    calls = [[1, 2, 3, 100 + i, 101 + i] for i in range(7)] + [[1, 2, 100, 101, 102, 103, 104, 105]]
    masks = [[int(t >= 100) for t in c] for c in calls]
    packed = pack_causal_rows(Dataset.from_dict({"input_ids": calls, "completion_mask": masks}), 10, 0)
    assert set(packed.column_names) == {"input_ids", "completion_mask"}
    assert all(len(row) == 10 for row in packed["input_ids"])  # filled up: no padding mask needed
    assert len(packed) < len(calls)  # several calls share a row
    flat = sorted(t for row in packed["input_ids"] for t in row if t != 0)
    assert flat == sorted(t for c in calls for t in c)
    for row, mask in zip(packed["input_ids"], packed["completion_mask"], strict=True):
        assert mask == [int(t >= 100) for t in row]  # filler (0) and prompts carry no loss


def test_causal_sft_trains_whole_rows_as_a_padded_batch(tmp_path, data_dir):
    """`packed_attention="causal"` with two rows per micro-batch: the model sees `[2, L]` batches with
    positions from 0 in each row (never one flattened `2L` sequence), and the loss falls."""
    import training.sft as sft

    shapes: list[tuple[int, ...]] = []
    original = sft._trainer_class

    def spying_class():
        base = original()

        class Spy(base):
            def compute_loss(self, model, inputs, *args, **kwargs):
                shapes.append(tuple(inputs["input_ids"].shape))
                assert "position_ids" not in inputs or int(inputs["position_ids"].max()) < 256
                return super().compute_loss(model, inputs, *args, **kwargs)

        return Spy

    cfg = load_config(overrides={
        "output_dir": str(tmp_path / "run"), "model_shape": "tiny", "train_files": [str(data_dir)],
        "max_length": 256, "max_steps": 10, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
        "learning_rate": 3e-3, "warmup_steps": 0, "logging_steps": 1, "num_threads": 1, "save_every_minutes": 0,
        "packed_attention": "causal",
    })
    sft._trainer_class = spying_class
    try:
        final = train(cfg)
    finally:
        sft._trainer_class = original
    assert shapes and all(s == (2, 256) for s in shapes)
    state = json.loads((final / "trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3


def test_dataset_kwargs_from_the_command_line_are_a_json_object(tmp_path):
    cfg = load_config(["--output_dir", str(tmp_path), "--dataset_kwargs", '{"num_proc": 1}'])
    assert cfg.dataset_kwargs == {"num_proc": 1, "skip_prepare_dataset": False}
    assert load_config(overrides={"output_dir": str(tmp_path), "dataset_kwargs": {"num_proc": 2}}).dataset_kwargs == {
        "num_proc": 2, "skip_prepare_dataset": False}
    with pytest.raises(ValueError, match="dataset_kwargs must be a mapping"):
        load_config(["--output_dir", str(tmp_path), "--dataset_kwargs", "[1, 2]"])


def test_packed_attention_is_validated(tmp_path):
    cfg = load_config(overrides={"output_dir": str(tmp_path), "packed_attention": "causal"})
    assert cfg.packed_attention == "causal"
    with pytest.raises(ValueError, match="packed_attention"):
        load_config(overrides={"output_dir": str(tmp_path), "packed_attention": "sideways"})


def test_time_schedule_sets_and_logs_the_applied_rate(tmp_path, data_dir):
    """`lr_schedule_by_time`: half-way through [schedule_start, stop_at] the cosine gives min + (1 - min) / 2."""
    import time

    now = time.time()
    cfg = load_config(overrides={
        "output_dir": str(tmp_path / "run"),
        "model_shape": "tiny",
        "train_files": [str(data_dir)],
        "max_length": 256,
        "max_steps": 3,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1e-3,
        "lr_scheduler_kwargs": {"min_lr_rate": 0.1},
        "warmup_steps": 0,
        "logging_steps": 1,
        "num_threads": 1,
        "save_every_minutes": 0,
        "schedule_start": str(now - 10 * 86400),  # a wide span: a slow machine still sits at the middle
        "stop_at": str(now + 10 * 86400),
        "lr_schedule_by_time": True,
    })
    final = train(cfg)
    state = json.loads((final / "trainer_state.json").read_text())
    rates = [e["learning_rate"] for e in state["log_history"] if "loss" in e]
    assert len(rates) == 3
    for rate in rates:  # the step schedule would have logged 1e-3 falling towards 1e-4 instead
        assert rate == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5), rel=0.02)


def test_a_stage_cut_by_its_deadline_is_resumed_before_the_next_one(tmp_path, data_dir, capsys):
    """`stop_at` writes final/ also when it cuts a step schedule short; the next stage must not start from it."""
    import time

    first = tmp_path / "stage1.yaml"
    common = (f"model_shape: tiny\ntrain_files: [{data_dir}]\nmax_length: 256\ngradient_accumulation_steps: 1\n"
              "save_every_minutes: 0\nnum_threads: 1\nlogging_steps: 1\nwarmup_steps: 0\n")
    past = str(time.time() - 60)
    first.write_text(common + f"output_dir: {tmp_path / 's1'}\nmax_steps: 5\nresume: true\nstop_at: '{past}'\n")
    final1 = train(load_config(["--recipe", str(first)]))
    stage = json.loads((final1 / "stage.json").read_text())
    assert stage == {"global_step": 1, "max_steps": 5, "stopped_at_deadline": True, "complete": False}
    assert not stage_complete(final1) and (tmp_path / "s1" / "checkpoint-1").is_dir()

    second = load_config(overrides={"model_name_or_path": str(final1), "init_recipe": str(first),
                                    "output_dir": str(tmp_path / "s2"), "model_shape": "tiny",
                                    "train_files": [str(data_dir)], "max_length": 256, "max_steps": 2,
                                    "gradient_accumulation_steps": 1, "save_every_minutes": 0, "num_threads": 1})
    with pytest.raises(StageIncomplete, match="stopped before its last step"):
        train(second)  # stage 1 resumes from checkpoint-1, hits its deadline again after one step
    assert json.loads((final1 / "stage.json").read_text())["global_step"] == 2
    assert not (tmp_path / "s2").exists()

    first.write_text(first.read_text().replace(f"stop_at: '{past}'\n", ""))
    final2 = train(second)
    stage = json.loads((final1 / "stage.json").read_text())
    assert stage["global_step"] == 5 and stage["complete"] and stage_complete(final1)
    assert "from an interrupted run" in capsys.readouterr().out
    assert json.loads((final2 / "stage.json").read_text())["complete"]
    assert stage_complete(tmp_path / "no-stage-file")  # an exported or shipped model counts as complete


@pytest.mark.parametrize("recipe", sorted(p.name for p in (Path(__file__).parents[2] / "training" / "recipes").glob("*.yaml")))
def test_shipped_recipes_parse_and_chain(recipe, monkeypatch):
    """Every recipe loads; a stage that continues another names a recipe that writes the weights it reads, and
    every training file is written by one of its own `generate_data` commands."""
    root = Path(__file__).parents[2]
    monkeypatch.chdir(root)
    if "grpo" in recipe:  # a GRPO recipe starts from the final weights of an SFT recipe or of another GRPO one
        from training.grpo_config import TreeGRPOConfig
        from training.recipe import config_from

        cfg = config_from(f"training/recipes/{recipe}", {}, cls=TreeGRPOConfig)
        outputs = {f"{load_config(['--recipe', str(p)]).output_dir}/final"
                   for p in Path("training/recipes").glob("*.yaml") if "grpo" not in p.name}
        outputs |= {f"{config_from(str(p), {}, cls=TreeGRPOConfig).output_dir}/final"
                    for p in Path("training/recipes").glob("*grpo*.yaml") if p.name != recipe}
        assert cfg.model_name_or_path in outputs
        return
    cfg = load_config(["--recipe", f"training/recipes/{recipe}"])
    if cfg.model_name_or_path:
        assert cfg.init_recipe, "a continued stage must say which recipe makes its starting weights"
        parent = load_config(["--recipe", cfg.init_recipe])
        assert cfg.model_name_or_path == f"{parent.output_dir}/final"
    outs = [cmd.split("--out ")[1].split()[0] for cmd in cfg.generate_data or []]
    assert cfg.train_files and set(cfg.train_files) <= set(outs)
