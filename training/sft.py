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

The data mix (`training/sft_data.py`) is one or more `spawnjoin-train data` outputs plus optional warm-up,
state-reading and join-reading corpora.

Run `spawnjoin-train sft --recipe training/recipes/countdown-apr.yaml`; any `SpawnJoinSFTConfig` field is also a
flag (`--learning_rate 5e-4`) and flags win over the recipe.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .recipe import add_config_arguments, config_fields, config_from, load_config
from .sft_data import (
    arithmetic_rows,
    ensure_data,
    join_rows,
    load_rows,
    pack_causal_rows,
    reading_rows,
    tokenize_rows,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

    from .sft_config import SpawnJoinSFTConfig

__all__ = ["StageIncomplete", "add_parser", "build_model", "export_model", "run", "stage_complete", "train"]

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
        ensure_data(cfg.generate_data)

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
    known = {f.name for f in config_fields()}
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
