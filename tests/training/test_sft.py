"""SFT: data mix, masks, config parsing, and a few training steps on a tiny model built from a config."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from training.sft import (  # noqa: E402
    _result_mask,
    arithmetic_rows,
    load_config,
    load_rows,
    tokenize_rows,
    train,
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


def test_sft_loss_decreases_and_saves(tmp_path, data_dir):
    cfg = load_config(overrides={
        "output_dir": str(tmp_path / "run"),
        "model_shape": "tiny",
        "train_files": [str(data_dir)],
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
    state = json.loads((final / "trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json"):
        assert (final / name).exists()
        assert (tmp_path / "export" / name).exists()
    assert any("tokens_per_second" in e for e in state["log_history"])


def test_causal_packing_attends_across_calls_isolated_does_not():
    """`packed_attention="causal"` turns a padding-free packed row into one causal row; the isolated default keeps
    each call to itself. The first call's logits are the same either way; the second call's differ."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.sft import _causal_row

    inputs = {
        "input_ids": torch.tensor([[5, 6, 7, 8, 9, 10]]),
        "labels": torch.tensor([[-100, 6, 7, -100, 9, 10]]),
        "position_ids": torch.tensor([[0, 1, 2, 0, 1, 2]]),
        "cu_seq_lens_q": torch.tensor([0, 3, 6], dtype=torch.int32),
        "cu_seq_lens_k": torch.tensor([0, 3, 6], dtype=torch.int32),
        "max_length_q": 3,
        "max_length_k": 3,
        "seq_idx": torch.tensor([[0, 0, 0, 1, 1, 1]], dtype=torch.int32),
    }
    row = _causal_row(inputs)
    assert row["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5]]
    assert not {"cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "seq_idx"} & set(row)
    assert row["labels"].tolist() == inputs["labels"].tolist()  # no call learns to predict across a seam
    assert inputs["position_ids"].tolist() == [[0, 1, 2, 0, 1, 2]]  # the caller's batch is left alone

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=4,
                                         max_position_embeddings=64)).eval()
    with torch.no_grad():
        # use_cache=False as in training: transformers reads packing from position ids only without a cache.
        isolated = model(input_ids=inputs["input_ids"], position_ids=inputs["position_ids"], use_cache=False).logits
        causal = model(input_ids=row["input_ids"], position_ids=row["position_ids"], use_cache=False).logits
        second_alone = model(input_ids=inputs["input_ids"][:, 3:], use_cache=False).logits
    assert torch.allclose(isolated[:, :3], causal[:, :3], atol=1e-5)
    assert torch.allclose(isolated[:, 3:], second_alone, atol=1e-5)  # isolated: as if the call were alone
    assert not torch.allclose(causal[:, 3:], second_alone, atol=1e-3)  # causal: it sees the call before it


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
