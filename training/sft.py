"""`spawnjoin-train sft`: supervised fine-tuning on thread-call demonstrations with TRL's `SFTTrainer`.

Every thread call of a demonstration tree (each parent call, each child call) is one sequence, `<bos> prompt
completion <eos>`, and by default only the completion and `<eos>` carry loss (`loss_on="completion"`): that is the
text the model writes at inference. The prompt is the problem (random numbers, unpredictable), a child's context
rebuilt by the runtime, or a parent's earlier text plus the join block the runtime injects; training on it would
spend capacity predicting noise and learn the parent's first call twice. `loss_on="all"` reproduces the APR paper.

Sequences are packed into rows of `max_length` tokens. With `packed_attention="isolated"` TRL packs them
padding-free with their own position ids, so calls never attend to each other (SDPA builds a block-diagonal mask
from the position ids). With `"causal"` they are packed here and each row trains as one causal sequence, several
rows per micro-batch.

The data mix is one or more `spawnjoin-train data` outputs plus an optional arithmetic warm-up corpus: lines
`x op y=z` taken from the symbolic searches (so operands follow the traces' distribution) and written exactly as
traces write them, with loss only on `z` and the line end. On a CPU a small model learns the trace format quickly
but the arithmetic slowly (shared/reference/cpu-training.md); the warm-up packs several times more arithmetic into
each token than traces do.

Run `spawnjoin-train sft --recipe training/recipes/countdown-apr.yaml`; any `SpawnJoinSFTConfig` field is also a
flag (`--learning_rate 5e-4`) and flags win over the recipe.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import re
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast, get_type_hints

if TYPE_CHECKING:
    from _typeshed import DataclassInstance
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

    from .sft_config import SpawnJoinSFTConfig

__all__ = [
    "add_parser",
    "arithmetic_rows",
    "build_model",
    "join_rows",
    "load_config",
    "load_rows",
    "reading_rows",
    "run",
    "tokenize_rows",
    "train",
]

_OP_RE = re.compile(r"Exploring Operation: (\d+[-+*/]\d+=)(\d+)")


# --------------------------------------------------------------------------------------------------- data


def _ensure_data(commands: list[str]) -> None:
    """Run each `spawnjoin-train data` command whose `--out` directory has no JSONL rows yet."""
    from . import data as data_cmd

    for command in commands:
        argv = shlex.split(command)
        if argv and argv[0] == "data":
            argv = argv[1:]
        out = Path(argv[argv.index("--out") + 1]) if "--out" in argv else None
        if out is not None and any(out.glob("*.jsonl")):
            continue
        parser = argparse.ArgumentParser(prog="spawnjoin-train")
        data_cmd.add_parser(parser.add_subparsers())
        args = parser.parse_args(["data", *argv, "--quiet"])
        data_cmd.run(args)


def _jsonl_files(entry: str) -> list[Path]:
    path = Path(entry)
    if path.is_dir():
        # `spawnjoin-train data` writes {split}.jsonl beside {split}.trees.jsonl; only the former holds rows.
        return sorted(p for p in path.glob("*.jsonl") if not p.name.endswith(".trees.jsonl"))
    if path.exists():
        return [path]
    raise FileNotFoundError(f"training data {entry!r} does not exist; run `spawnjoin-train data ... --out {entry}`")


def load_rows(files: list[str], weights: list[float] | None = None, *, seed: int = 0) -> list[dict[str, str]]:
    """Read `prompt`/`completion` rows from JSONL files or directories, each taking a weighted share.

    Args:
        files (`list[str]`): JSONL files, or directories written by `spawnjoin-train data`.
        weights (`list[float]`, *optional*): Fraction of each entry's rows to use; above 1 repeats rows.
        seed (`int`, *optional*, defaults to `0`): Seed of the sub-sampling.

    Returns:
        `list[dict[str, str]]`: Rows with `prompt` and `completion`.
    """
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    for i, entry in enumerate(files):
        source = []
        for path in _jsonl_files(entry):
            with path.open() as f:
                for line in f:
                    if line.strip():
                        row = json.loads(line)
                        source.append({"prompt": row["prompt"], "completion": row["completion"]})
        weight = 1.0 if weights is None else weights[i]
        whole, frac = divmod(weight, 1.0)
        picked = source * int(whole) + rng.sample(source, int(round(frac * len(source))))
        rows.extend(picked)
    return rows


def arithmetic_rows(n_rows: int, *, lines: int = 64, numbers: tuple[int, ...] = (3, 4), seed: int = 0) -> list[str]:
    """The arithmetic warm-up corpus: rows of `x op y=z` lines from symbolic searches of training problems.

    Operations come from the `Exploring Operation` lines of APR and SoS+ searches over training-split problems,
    so operand sizes follow what traces contain (inputs up to 99, intermediate results, exact divisions only).

    Args:
        n_rows (`int`): Rows to make.
        lines (`int`, *optional*, defaults to `64`): Operation lines per row.
        numbers (`tuple[int, ...]`, *optional*, defaults to `(3, 4)`): Problem sizes to draw searches from.
        seed (`int`, *optional*, defaults to `0`): Seed.

    Returns:
        `list[str]`: Rows, each `lines` lines of `x op y=z\\n`.
    """
    from spawnjoin.tasks.countdown import apr, iter_split, sos_plus

    rng = random.Random(seed)
    needed = n_rows * lines
    ops: list[str] = []
    streams = [iter_split("train", numbers=k, seed=seed + 7919 * k) for k in numbers]
    while len(ops) < needed:
        problem = next(streams[len(ops) % len(streams)])
        solver = apr if rng.random() < 0.5 else sos_plus
        tree = solver(problem, beam_size=rng.randint(1, 5), rng=rng)
        for thread in tree.threads():
            for call in thread.calls:
                ops.extend(a + b for a, b in _OP_RE.findall(call.target))
    rng.shuffle(ops)
    return ["".join(op + "\n" for op in ops[i * lines : (i + 1) * lines]) for i in range(n_rows)]


_EXPANSION_LINE = ("Exploring Operation: ", "Generated Node #")


def _repeat_sample(eligible: list[dict[str, str]], n_rows: int, seed: int) -> list[dict[str, str]]:
    """`n_rows` of `eligible`: every one as many whole times as fit, the rest sampled without repetition."""
    whole, rest = divmod(n_rows, len(eligible)) if eligible else (0, 0)
    return eligible * whole + random.Random(seed).sample(eligible, rest)


def reading_rows(rows: list[dict[str, str]], n_rows: int, *, min_numbers: int = 3, seed: int = 0) -> list[dict[str, str]]:
    """The state-reading corpus: a node's prompt and only the expansion lines that read its state.

    A thread's first call opens with `Current State: T:[a, b, c], ...` in its prompt and writes `Exploring
    Operation` / `Generated Node` lines whose operands and remaining numbers must be copied from that state. A row
    here keeps the prompt and that leading run of lines and nothing after it (no spawn block, no `<eos>`: the
    sequence is cut, not ended), so the copying gets several times more of the loss per token than whole calls give
    it. Only states of at least `min_numbers` numbers are used (two-number states are read reliably already).

    Args:
        rows (`list[dict[str, str]]`): `prompt`/`completion` rows (thread calls) to cut from.
        n_rows (`int`): Rows to make (sampled with repetition when fewer eligible calls exist).
        min_numbers (`int`, *optional*, defaults to `3`): Smallest state size to use.
        seed (`int`, *optional*, defaults to `0`): Seed of the sampling.

    Returns:
        `list[dict[str, str]]`: Rows with `prompt` (the node prompt) and `completion` (the expansion lines).
    """
    from spawnjoin.tasks.countdown.verify import STATE_RE

    eligible = []
    for row in rows:
        state = STATE_RE.fullmatch(row["prompt"].rstrip("\n").rpartition("\n")[2])  # the prompt's last line
        if state is None or len(state.group(2).split(", ")) < min_numbers:
            continue
        kept = []
        for line in row["completion"].splitlines(keepends=True):
            if not line.startswith(_EXPANSION_LINE) or not line.endswith("\n"):
                break
            kept.append(line)
        if kept:
            eligible.append({"prompt": row["prompt"], "completion": "".join(kept)})
    if n_rows and not eligible:
        raise ValueError(f"no call opens on a state of {min_numbers}+ numbers with expansion lines to read it")
    return _repeat_sample(eligible, n_rows, seed)


def join_rows(rows: list[dict[str, str]], n_rows: int, *, seed: int = 0) -> list[dict[str, str]]:
    """The join-reading corpus: whole calls that continue after a join in which a sub search reached the goal.

    After `<End Sub Searches>` a parent must rewrite the winning sub search's path as its own (its node's
    operation, then each line of the child's), copying operations and numbers out of the join. Held out, the
    stage-6 model lost 99 of 500 4-number problems there: a thread reached the goal and the root's path did not
    verify. These rows repeat exactly those calls (prompt with the join, completion and `<eos>`, as in
    `train_files`), so that copy gets more of the loss than its share of the calls gives it.

    Args:
        rows (`list[dict[str, str]]`): `prompt`/`completion` rows (thread calls) to choose from.
        n_rows (`int`): Rows to make (sampled with repetition when fewer eligible calls exist).
        seed (`int`, *optional*, defaults to `0`): Seed of the sampling.

    Returns:
        `list[dict[str, str]]`: The chosen calls, unchanged.

    Raises:
        ValueError: If `n_rows > 0` and no call continues after a join that reached the goal.
    """
    eligible = [r for r in rows if "<End Sub Searches>" in r["prompt"]
                and "<Goal Reached in Sub Search" in r["prompt"].rpartition("<Sub Searches>")[2]]
    if n_rows and not eligible:
        raise ValueError("no call continues after a join in which a sub search reached the goal")
    return _repeat_sample(eligible, n_rows, seed)


def _result_mask(tokens: list[str]) -> list[int]:
    """1 on the tokens of each result and its line end (after `=` up to and including the newline)."""
    mask, inside = [], False
    for tok in tokens:
        mask.append(1 if inside else 0)
        if tok == "=":
            inside = True
        elif tok.endswith("\n"):
            inside = False
    return mask


def tokenize_rows(
    rows: list[dict[str, str]],
    arithmetic: list[str],
    tokenizer: PreTrainedTokenizerFast,
    *,
    reading: list[dict[str, str]] | None = None,
    seed: int = 0,
) -> Dataset:
    """Tokenize calls and warm-up rows into a shuffled dataset with `input_ids` and `completion_mask`.

    Args:
        rows (`list[dict[str, str]]`): `prompt`/`completion` rows; a sequence is `<bos> prompt completion <eos>`
            with mask 1 on the completion and `<eos>`.
        arithmetic (`list[str]`): Warm-up rows; mask 1 on each result and its line end.
        tokenizer (`PreTrainedTokenizerFast`): The tokenizer (it prepends `<bos>`).
        reading (`list[dict[str, str]]`, *optional*): State-reading rows (`reading_rows`): `<bos> prompt
            completion` with mask 1 on the completion and no `<eos>` (the call goes on after them).
        seed (`int`, *optional*, defaults to `0`): Shuffle seed.

    Returns:
        `Dataset`: Columns `input_ids` and `completion_mask`.
    """
    from datasets import Dataset

    ids: list[list[int]] = []
    masks: list[list[int]] = []
    # Calls end with <eos>; state-reading rows are cut calls and end without one. Loss on completion (+ <eos>).
    for batch, end in ((rows, [tokenizer.eos_token_id]), (reading or [], [])):
        if not batch:
            continue
        prompts = tokenizer([r["prompt"] for r in batch])["input_ids"]
        completions = tokenizer([r["completion"] for r in batch], add_special_tokens=False)["input_ids"]
        for p, c in zip(prompts, completions, strict=True):
            ids.append(p + c + end)
            masks.append([0] * len(p) + [1] * (len(c) + len(end)))
    if arithmetic:
        encoded = tokenizer(arithmetic)["input_ids"]
        for seq in encoded:
            ids.append(seq)
            masks.append(_result_mask(cast("list[str]", tokenizer.convert_ids_to_tokens(seq))))  # a list in
    order = list(range(len(ids)))
    random.Random(seed).shuffle(order)
    return Dataset.from_dict({"input_ids": [ids[i] for i in order], "completion_mask": [masks[i] for i in order]})


# --------------------------------------------------------------------------------------------------- model


def load_tokenizer(model_dir: str | None) -> PreTrainedTokenizerFast:
    """The tokenizer saved with `model_dir`, else a freshly built Countdown tokenizer."""
    if model_dir and (Path(model_dir) / "tokenizer.json").exists():
        from transformers import AutoTokenizer

        return cast("PreTrainedTokenizerFast", AutoTokenizer.from_pretrained(model_dir))  # a fast tokenizer
    from .tokenizer import build_tokenizer

    return build_tokenizer()


def build_model(cfg: SpawnJoinSFTConfig, tokenizer: PreTrainedTokenizerFast) -> PreTrainedModel:
    """Load `cfg.model_name_or_path`, or build a new `LlamaForCausalLM` of shape `cfg.model_shape`.

    Args:
        cfg (`SpawnJoinSFTConfig`): The configuration.
        tokenizer (`PreTrainedTokenizerFast`): Sets the vocabulary size and special token ids of a new model.

    Returns:
        `PreTrainedModel`: The model, in float32 (bf16 is applied by autocast).
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    from .model_configs import build_config

    if cfg.model_name_or_path and Path(cfg.model_name_or_path).exists():
        return AutoModelForCausalLM.from_pretrained(cfg.model_name_or_path, dtype=torch.float32)
    torch.manual_seed(cfg.seed)
    config = build_config(
        cfg.model_shape,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def _export_with_state(cfg: Any, model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, state: Any) -> None:
    """Export to `cfg.export_dir` with a `training_state.json` note of the step and tokens the weights have seen."""
    export_model(model, tokenizer, cfg.export_dir, dtype=cfg.export_dtype)
    note = {"global_step": state.global_step, "tokens_seen": state.num_input_tokens_seen,
            "time": time.strftime("%H:%M:%S", time.gmtime())}
    Path(cfg.export_dir, "training_state.json").write_text(json.dumps(note) + "\n")


def export_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, out: str | Path, *,
                 dtype: str = "float32") -> Path:
    """Write an inference-ready copy: `config.json`, `model.safetensors`, tokenizer files, `generation_config.json`.

    Args:
        model (`PreTrainedModel`): The model.
        tokenizer (`PreTrainedTokenizerFast`): Its tokenizer.
        out (`str | Path`): Output directory (replaced file by file).
        dtype (`str`, *optional*, defaults to `"float32"`): `"float32"` or `"bfloat16"`.

    Returns:
        `Path`: The directory.
    """
    import copy

    import torch
    from transformers import GenerationConfig

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    copy_ = copy.deepcopy(model).to(getattr(torch, dtype))
    copy_.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    copy_.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


# --------------------------------------------------------------------------------------------------- callbacks


def _amend_history(state: Any, logs: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Copy `keys` of `logs` into the newest `state.log_history` entry.

    Trainer appends a copy of `logs` to the history before calling `on_log`, so a callback that changes `logs`
    must change that copy too.
    """
    if state.log_history and state.log_history[-1].get("step") == state.global_step:
        state.log_history[-1].update({k: logs[k] for k in keys if k in logs})


def _callbacks(cfg: SpawnJoinSFTConfig, tokenizer: PreTrainedTokenizerFast) -> list[Any]:
    from transformers import TrainerCallback

    from .callbacks import TimedSave, wall_clock

    deadline = wall_clock(cfg.stop_at, ahead=True)

    class Throughput(TrainerCallback):
        """Add `tokens_per_second` (since the previous log) and `elapsed_minutes` to each log entry."""

        def __init__(self) -> None:
            self.t0 = self.t = time.time()
            self.seen = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs is None or "loss" not in logs:
                return
            now, seen = time.time(), state.num_input_tokens_seen
            if self.seen is not None and now > self.t:
                logs["tokens_per_second"] = round((seen - self.seen) / (now - self.t), 1)
            logs["elapsed_minutes"] = round((now - self.t0) / 60, 2)
            self.t, self.seen = now, seen
            _amend_history(state, logs, ("tokens_per_second", "elapsed_minutes"))

    class Export(TrainerCallback):
        """Write an inference-ready copy to `export_dir` at every checkpoint."""

        def on_save(self, args, state, control, model=None, **kwargs):
            if cfg.export_dir and model is not None and state.is_world_process_zero:
                _export_with_state(cfg, model, tokenizer, state)

    class TimeSchedule(TrainerCallback):
        """After warm-up, set the learning rate from the wall-clock share of [schedule_start, stop_at]."""

        def __init__(self) -> None:
            self.start = wall_clock(cfg.schedule_start) or time.time()
            kwargs = cast("dict[str, Any]", cfg.lr_scheduler_kwargs or {})  # TrainingArguments parsed it
            self.min_rate = float(kwargs.get("min_lr_rate", 0.0))

        def rate(self) -> float:
            assert deadline is not None  # TimeSchedule is only made with a deadline
            span = max(deadline - self.start, 1.0)
            progress = min(max((time.time() - self.start) / span, 0.0), 1.0)
            return self.min_rate + (1 - self.min_rate) * 0.5 * (1 + math.cos(math.pi * progress))

        def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
            if optimizer is None or state.global_step < args.get_warmup_steps(state.max_steps):
                return
            for group in optimizer.param_groups:
                group["lr"] = args.learning_rate * self.rate()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs is not None and "learning_rate" in logs and state.global_step >= args.get_warmup_steps(
                    state.max_steps):
                logs["learning_rate"] = args.learning_rate * self.rate()
                _amend_history(state, logs, ("learning_rate",))

    callbacks = [TimedSave(save_every_minutes=cfg.save_every_minutes, deadline=deadline), Throughput(), Export()]
    if cfg.lr_schedule_by_time and deadline is not None:
        callbacks.append(TimeSchedule())
    return callbacks


# --------------------------------------------------------------------------------------------------- train


def pack_causal_rows(dataset: Dataset, max_length: int, pad_token_id: int) -> Dataset:
    """Pack calls best-fit-decreasing into rows of exactly `max_length` tokens that train as plain causal rows.

    TRL packs padding-free: a batch becomes one flattened sequence, so more than one row per micro-batch would
    make a causal row `batch * max_length` long. Packing here instead, and training with `packing=False`, gives
    the collator whole rows for a `[batch, max_length]` tensor with positions `0..n-1` per row. Each row is filled
    up with `pad_token_id` (no loss, and nothing after it reads it), so the batch needs no padding mask and SDPA
    keeps its fused causal kernel.

    Args:
        dataset (`Dataset`): Columns `input_ids` and `completion_mask`, one call per row.
        max_length (`int`): Row length; a longer call is truncated, as TRL's `bfd` strategy does.
        pad_token_id (`int`): Filler token.

    Returns:
        `Dataset`: Columns `input_ids` and `completion_mask`, several calls per row, every row `max_length` long.
    """
    from trl.data_utils import pack_dataset

    packed = pack_dataset(dataset, max_length, strategy="bfd")
    packed = packed.remove_columns([c for c in packed.column_names if c not in ("input_ids", "completion_mask")])

    def fill(batch: dict[str, list[list[int]]]) -> dict[str, list[list[int]]]:
        ids = [row + [pad_token_id] * (max_length - len(row)) for row in batch["input_ids"]]
        masks = [row + [0] * (max_length - len(row)) for row in batch["completion_mask"]]
        return {"input_ids": ids, "completion_mask": masks}

    return packed.map(fill, batched=True)


def _trainer_class() -> type:
    """`SFTTrainer` with bf16 autocast around the loss on a CPU.

    TRL replaces the model's forward with a fused LM-head forward, which skips the autocast wrapper accelerate puts
    on the model, so on a CPU `bf16=True` would otherwise train in float32 (measured: 0.8k vs 2k tokens/s, 5M model).
    """
    import torch
    from trl import SFTTrainer

    class CPUAutocastSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, *args, **kwargs):
            enabled = bool(self.args.bf16) and self.args.use_cpu
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
                return super().compute_loss(model, inputs, *args, **kwargs)

    return CPUAutocastSFTTrainer


STAGE_FILE = "stage.json"


class StageIncomplete(RuntimeError):
    """The stage a recipe continues from has not finished (it stopped at its deadline)."""


def stage_complete(model_dir: str | Path) -> bool:
    """Whether `model_dir` holds a finished stage: `False` only when its `stage.json` says the run stopped early.

    `train` writes `final/` also when `stop_at` cuts a step-scheduled run short; `stage.json` beside it tells the
    two apart. A directory without one (an exported or shipped model) counts as complete.
    """
    marker = Path(model_dir) / STAGE_FILE
    return not marker.exists() or bool(json.loads(marker.read_text()).get("complete", True))


def _finish_init_stage(cfg: SpawnJoinSFTConfig) -> None:
    """Run (or resume) `cfg.init_recipe` when the weights it writes are missing or from an interrupted run."""
    path = Path(cfg.model_name_or_path or "")
    if path.exists() and stage_complete(path):
        return
    why = "missing" if not path.exists() else "from an interrupted run"
    print(f"[sft] {path} {why}: running {cfg.init_recipe} first", flush=True)
    init = load_config(["--recipe", cfg.init_recipe or ""])
    init.resume = True  # an interrupted stage continues from its checkpoint
    if cfg.stop_at and not init.stop_at:  # the deadline given for this stage holds for the one before it
        init.stop_at = cfg.stop_at
    train(init)
    if not stage_complete(path):
        raise StageIncomplete(f"{cfg.init_recipe} stopped before its last step (see {path / STAGE_FILE}); "
                              f"run this command again to resume it before this stage starts")


def train(cfg: SpawnJoinSFTConfig) -> Path:
    """Build the data mix and the model, train with `SFTTrainer`, and save the final model with its tokenizer.

    Args:
        cfg (`SpawnJoinSFTConfig`): The configuration.

    Returns:
        `Path`: `output_dir/final`, an HF model directory.
    """
    import torch

    from .callbacks import TimedSave, resume_checkpoint

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    if cfg.model_name_or_path and cfg.init_recipe:
        _finish_init_stage(cfg)
    if cfg.generate_data:
        _ensure_data(cfg.generate_data)

    tokenizer = load_tokenizer(cfg.model_name_or_path)
    data_seed = cfg.seed + cfg.data_seed_offset
    rows = load_rows(cfg.train_files or [], cfg.train_weights, seed=data_seed)
    arith = arithmetic_rows(cfg.arithmetic_rows, lines=cfg.arithmetic_lines,
                            numbers=tuple(cfg.arithmetic_numbers), seed=data_seed) if cfg.arithmetic_rows else []
    reading = []
    if cfg.reading_rows:
        source = load_rows(cfg.reading_files, seed=data_seed) if cfg.reading_files else rows
        reading = reading_rows(source, cfg.reading_rows, min_numbers=cfg.reading_min_numbers, seed=data_seed)
    joins = []
    if cfg.join_rows:
        source = load_rows(cfg.join_files, seed=data_seed) if cfg.join_files else rows
        joins = join_rows(source, cfg.join_rows, seed=data_seed)
    if not rows and not arith and not reading and not joins:
        raise ValueError("no training data: set train_files, arithmetic_rows, reading_rows and/or join_rows")
    dataset = tokenize_rows(rows + joins, arith, tokenizer, reading=reading, seed=data_seed)
    n_tokens = sum(len(x) for x in dataset["input_ids"])  # before causal packing adds filler
    print(f"[sft] {len(rows)} calls + {len(joins)} join-reading calls + {len(arith)} arithmetic rows + "
          f"{len(reading)} state-reading rows, {n_tokens} tokens", flush=True)
    if cfg.packing and cfg.packed_attention == "causal":
        assert cfg.max_length is not None, "causal packing needs max_length"
        dataset = pack_causal_rows(dataset, cfg.max_length, tokenizer.pad_token_id)
        cfg.packing = cfg.padding_free = False  # rows are packed already; the collator stacks them into a batch

    model = build_model(cfg, tokenizer)
    print(f"[sft] model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters", flush=True)
    callbacks = _callbacks(cfg, tokenizer)
    trainer = _trainer_class()(model=model, args=cfg, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=callbacks)
    assert cfg.output_dir is not None  # TrainingArguments.__post_init__ defaults it
    trainer.train(resume_from_checkpoint=resume_checkpoint(cfg.output_dir, cfg.resume, "sft"))
    final = Path(cfg.output_dir) / "final"
    export_model(trainer.model, tokenizer, final, dtype="float32")
    trainer.state.save_to_json(str(final / "trainer_state.json"))
    stopped = any(isinstance(c, TimedSave) and c.stopped for c in callbacks)
    stage = {"global_step": trainer.state.global_step, "max_steps": trainer.state.max_steps,
             "stopped_at_deadline": stopped,
             # A time schedule has annealed by its deadline, so that stage is over; a step schedule was cut short.
             "complete": not stopped or trainer.state.global_step >= trainer.state.max_steps
                         or cfg.lr_schedule_by_time}
    (final / STAGE_FILE).write_text(json.dumps(stage) + "\n")
    if cfg.export_dir:
        _export_with_state(cfg, trainer.model, tokenizer, trainer.state)
    print(f"[sft] saved {final}", flush=True)
    return final


# --------------------------------------------------------------------------------------------------- CLI


def _config_fields(cls: type[DataclassInstance] | None = None) -> list[dataclasses.Field]:
    """The init fields of a config dataclass (default `SpawnJoinSFTConfig`) with their types resolved."""
    if cls is None:
        from .sft_config import SpawnJoinSFTConfig

        cls = SpawnJoinSFTConfig
    hints = get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        if f.init:
            f.type = hints[f.name]
            fields.append(f)
    return fields


def add_config_arguments(parser: argparse.ArgumentParser, cls: type[DataclassInstance] | None = None) -> None:
    """Add every field of a config dataclass as a `--name` flag whose default is *absent*, so that only flags
    actually given override a recipe file.

    Args:
        parser (`argparse.ArgumentParser`): The (sub)parser.
        cls (`type`, *optional*): The config dataclass; defaults to `SpawnJoinSFTConfig`.
    """
    from transformers import HfArgumentParser

    group = parser.add_argument_group(cls.__name__ if cls else "SpawnJoinSFTConfig")
    for f in _config_fields(cls):
        # HF annotates a parser but only calls add_argument, which an argument group has too.
        HfArgumentParser._parse_dataclass_field(group, f)  # type: ignore[arg-type]
    for action in group._group_actions:
        action.default = argparse.SUPPRESS


def load_config(argv: list[str] | None = None, *, recipe: str | None = None,
                overrides: dict[str, Any] | None = None, cls: type[DataclassInstance] | None = None) -> Any:
    """Build a config from a recipe file, then flags, then keyword overrides (later wins).

    Args:
        argv (`list[str]`, *optional*): Flags as on the command line (may include `--recipe FILE`).
        recipe (`str`, *optional*): Recipe file (YAML or JSON), used when `argv` names none.
        overrides (`dict`, *optional*): Field values applied last.
        cls (`type`, *optional*): The config dataclass; defaults to `SpawnJoinSFTConfig`.

    Returns:
        The configuration.
    """
    parser = argparse.ArgumentParser(prog="spawnjoin-train")
    parser.add_argument("--recipe", default=recipe)
    add_config_arguments(parser, cls)
    ns = vars(parser.parse_args(argv or []))
    return config_from(ns.pop("recipe"), ns, overrides, cls)


def config_from(recipe: str | None, flags: dict[str, Any], overrides: dict[str, Any] | None = None,
                cls: type[DataclassInstance] | None = None) -> Any:
    """Merge a recipe file, flags and overrides (later wins) into a config dataclass, rejecting unknown keys."""
    if cls is None:
        from .sft_config import SpawnJoinSFTConfig

        cls = SpawnJoinSFTConfig
    values: dict[str, Any] = {}
    if recipe:
        import yaml

        values.update(yaml.safe_load(Path(recipe).read_text()) or {})
    values.update(flags)
    values.update(overrides or {})
    known = {f.name for f in _config_fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown} (from {recipe or 'flags'})")
    return cls(**values)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `sft` subcommand.

    Args:
        subparsers (`argparse._SubParsersAction`): The CLI's subparsers.

    Returns:
        `argparse.ArgumentParser`: The new subparser.
    """
    p = subparsers.add_parser("sft", help="supervised fine-tuning on thread-call demonstrations (TRL SFTTrainer)")
    p.add_argument("--recipe", help="recipe file (YAML): config fields; flags given here override it")
    add_config_arguments(p)
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run `spawnjoin-train sft` with parsed arguments.

    Args:
        args (`argparse.Namespace`): Parsed arguments.

    Returns:
        `int`: Exit status.
    """
    known = {f.name for f in _config_fields()}
    flags = {k: v for k, v in vars(args).items() if k in known}
    cfg = config_from(args.recipe, flags)
    if cfg.num_threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(cfg.num_threads))
    try:
        train(cfg)
    except StageIncomplete as exc:
        print(f"[sft] {exc}", flush=True)
        return 3
    return 0
