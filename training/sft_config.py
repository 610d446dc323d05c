"""`SpawnJoinSFTConfig`: TRL's `SFTConfig` plus what training thread-call demonstrations from scratch needs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from trl import SFTConfig

__all__ = ["SpawnJoinSFTConfig"]


@dataclass
class SpawnJoinSFTConfig(SFTConfig):
    r"""
    Configuration for `spawnjoin-train sft`. Every field is also a command-line flag; a recipe file (YAML) sets
    any of them with `--recipe FILE`, and flags given after it win.

    Every thread call of a demonstration tree (each parent call, each child call) is one training sequence:
    `<bos> prompt completion <eos>`. Sequences are packed into rows of `max_length` tokens that keep their own
    position ids, so packed calls never attend to each other.

    Parameters:
        > Model

        model_name_or_path (`str`, *optional*):
            A local model directory (HF format) to continue training from. When it is unset, or it does not exist
            and `init_recipe` is unset, a new model of shape `model_shape` is built.
        model_shape (`str`, *optional*, defaults to `"small"`):
            Named shape from `training.model_configs.MODEL_SHAPES` for a new model.
        init_recipe (`str`, *optional*):
            Recipe to run first when `model_name_or_path` does not exist yet (a warm-up stage that feeds this one).

        > Data

        generate_data (`list[str]`, *optional*):
            `spawnjoin-train data ...` argument strings, each run first unless its `--out` directory already has data.
        train_files (`list[str]`, *optional*):
            JSONL files or directories of them, rows with `prompt` and `completion` (one row per thread call).
        train_weights (`list[float]`, *optional*):
            One weight per entry of `train_files`: the fraction of its rows to use (above 1 repeats rows).
        arithmetic_rows (`int`, *optional*, defaults to `0`):
            Rows of the arithmetic warm-up corpus to add (see `arithmetic_lines`).
        arithmetic_lines (`int`, *optional*, defaults to `64`):
            Operation lines `x op y=z` per warm-up row; only `z` and the line end are trained.
        arithmetic_numbers (`list[int]`, *optional*, defaults to `[3, 4]`):
            Problem sizes whose symbolic searches supply the warm-up operations (their operand distribution).
        reading_rows (`int`, *optional*, defaults to `0`):
            Rows of the state-reading corpus to add (`training.sft_data.reading_rows`): a node prompt and only the
            expansion lines that copy operands and remaining numbers from its state, without `<eos>`.
        reading_files (`list[str]`, *optional*):
            Where the state-reading rows are cut from (like `train_files`); unset uses the `train_files` rows.
        reading_min_numbers (`int`, *optional*, defaults to `3`):
            Smallest state (numbers in `Current State`) a state-reading row may open on.
        join_rows (`int`, *optional*, defaults to `0`):
            Calls of the join-reading corpus to add (`training.sft_data.join_rows`): whole calls that continue after a
            join in which a sub search reached the goal, where the parent copies the winning path.
        join_files (`list[str]`, *optional*):
            Where the join-reading calls are chosen from (like `train_files`); unset uses the `train_files` rows.
        loss_on (`str`, *optional*, defaults to `"completion"`):
            `"completion"`: loss on what the model writes at inference (completion and `<eos>`); `"all"`: every
            token, prompts included, as the APR paper did.
        data_seed_offset (`int`, *optional*, defaults to `0`):
            Added to `seed` for the data mix and the warm-up corpus.
        packed_attention (`str`, *optional*, defaults to `"isolated"`):
            `"isolated"`: packed calls attend only to themselves (block-diagonal mask from position ids, as at
            inference). `"causal"`: plain causal attention over the whole packed row, as in LM pre-training; on a
            CPU SDPA then takes its fused causal kernel instead of an explicit mask, about 1.6x the tokens/s. Causal rows
            are packed before training and batched `[per_device_train_batch_size, max_length]`.

        > CPU and checkpoints

        num_threads (`int`, *optional*):
            Torch intra-op threads (`torch.set_num_threads`); unset keeps torch's default.
        save_every_minutes (`float`, *optional*, defaults to `10.0`):
            Save a checkpoint at the first step after this many minutes since the last one (0 disables).
        stop_at (`str`, *optional*):
            Wall-clock deadline, `HH:MM` (UTC, its next occurrence: tomorrow once today's is past) or seconds since
            the epoch: training saves and stops there.
        lr_schedule_by_time (`bool`, *optional*, defaults to `False`):
            Follow the cosine schedule (to `min_lr_rate` of the peak) over wall-clock time from `schedule_start` to
            `stop_at` instead of over steps, so a run on a shared machine anneals fully whatever its speed.
        schedule_start (`str`, *optional*):
            Start of the time schedule, `HH:MM` (UTC, today) or epoch seconds; defaults to when training starts.
        resume (`bool`, *optional*, defaults to `False`):
            Resume from the newest checkpoint in `output_dir` when there is one.
        export_dir (`str`, *optional*):
            Also write an inference-ready copy (model, tokenizer, generation config) here at every checkpoint and
            at the end.
        export_dtype (`str`, *optional*, defaults to `"float32"`):
            Parameter dtype of the exported copy (`"float32"` or `"bfloat16"`).
    """

    # Model
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Local HF model directory to continue training from; unset builds `model_shape`."},
    )
    model_shape: str = field(
        default="small", metadata={"help": "Named shape from training.model_configs for a new model."}
    )
    init_recipe: str | None = field(
        default=None, metadata={"help": "Recipe to run first when `model_name_or_path` does not exist yet."}
    )

    # Data
    generate_data: list[str] | None = field(
        default=None,
        metadata={"help": "`spawnjoin-train data` argument strings to run first (skipped when --out has data)."},
    )
    train_files: list[str] | None = field(
        default=None, metadata={"help": "JSONL files or directories with `prompt` and `completion` rows."}
    )
    train_weights: list[float] | None = field(
        default=None, metadata={"help": "Fraction of each train_files entry to use (above 1 repeats rows)."}
    )
    arithmetic_rows: int = field(default=0, metadata={"help": "Rows of the arithmetic warm-up corpus to add."})
    arithmetic_lines: int = field(default=64, metadata={"help": "Operation lines per arithmetic warm-up row."})
    arithmetic_numbers: list[int] = field(
        default_factory=lambda: [3, 4],
        metadata={"help": "Problem sizes whose searches supply the warm-up operations."},
    )
    reading_rows: int = field(default=0, metadata={"help": "Rows of the state-reading corpus to add."})
    reading_files: list[str] | None = field(
        default=None, metadata={"help": "Data the state-reading rows are cut from; unset uses train_files."}
    )
    reading_min_numbers: int = field(
        default=3, metadata={"help": "Smallest state size a state-reading row may open on."}
    )
    join_rows: int = field(default=0, metadata={"help": "Calls continuing after a goal-reaching join to add."})
    join_files: list[str] | None = field(
        default=None, metadata={"help": "Data the join-reading calls are chosen from; unset uses train_files."}
    )
    loss_on: str = field(
        default="completion",
        metadata={"help": "Train on 'completion' tokens (what the model writes) or 'all' tokens.",
                  "choices": ["completion", "all"]},
    )
    data_seed_offset: int = field(default=0, metadata={"help": "Added to `seed` for the data mix."})
    packed_attention: str = field(
        default="isolated",
        metadata={"help": "'isolated' (calls attend only to themselves) or 'causal' (across the packed row, faster).",
                  "choices": ["isolated", "causal"]},
    )

    # CPU and checkpoints
    num_threads: int | None = field(default=None, metadata={"help": "Torch intra-op threads."})
    save_every_minutes: float = field(
        default=10.0, metadata={"help": "Checkpoint every this many minutes (0 disables)."}
    )
    stop_at: str | None = field(
        default=None, metadata={"help": "Deadline, HH:MM UTC (next occurrence) or epoch seconds: save and stop there."}
    )
    lr_schedule_by_time: bool = field(
        default=False, metadata={"help": "Cosine learning-rate schedule over wall-clock time until stop_at."}
    )
    schedule_start: str | None = field(
        default=None, metadata={"help": "Start of the time schedule, HH:MM UTC or epoch seconds (default: now)."}
    )
    resume: bool = field(default=False, metadata={"help": "Resume from the newest checkpoint in output_dir."})
    export_dir: str | None = field(
        default=None, metadata={"help": "Also write an inference-ready copy here at every checkpoint and the end."}
    )
    export_dtype: str = field(
        default="float32",
        metadata={"help": "Dtype of the exported copy.", "choices": ["float32", "bfloat16"]},
    )

    # Defaults that differ from SFTConfig: small models from scratch, packed, on a CPU.
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate (AdamW)."})
    lr_scheduler_type: str = field(default="cosine_with_min_lr", metadata={"help": "Learning-rate schedule."})
    lr_scheduler_kwargs: dict | str | None = field(
        default_factory=lambda: {"min_lr_rate": 0.1}, metadata={"help": "Extra schedule arguments."}
    )
    warmup_steps: float = field(default=0.02, metadata={"help": "Warm-up steps (below 1: fraction of training)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    max_length: int | None = field(default=1024, metadata={"help": "Packed row length in tokens."})
    packing: bool = field(default=True, metadata={"help": "Pack sequences into rows of `max_length` tokens."})
    per_device_train_batch_size: int = field(
        default=1,
        metadata={"help": "Packed rows per micro-batch. With isolated packing keep 1 on CPU: padding-free packing "
                          "flattens the batch into one row, so attention cost grows with its square."},
    )
    gradient_accumulation_steps: int = field(default=8, metadata={"help": "Micro-batches per optimizer step."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the data mix."})
    logging_steps: float = field(default=10, metadata={"help": "Log every this many optimizer steps."})
    save_strategy: str = field(default="no", metadata={"help": "Step-based saving; time-based saving is separate."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept in output_dir."})
    # TRL widens TrainingArguments.bf16 to `bool | None` (None: on unless fp16); the field keeps TRL's type.
    bf16: bool | None = field(  # type: ignore[assignment]
        default=True, metadata={"help": "bf16 autocast (fast on CPUs with bf16 units)."}
    )
    use_cpu: bool = field(default=True, metadata={"help": "Train on the CPU even when a GPU is visible."})
    report_to: str | list[str] = field(default="none", metadata={"help": "Experiment trackers to log to."})
    include_num_input_tokens_seen: str | bool = field(
        default="non_padding", metadata={"help": "Count tokens seen ('all', 'non_padding' or 'no')."}
    )
    dataloader_num_workers: int = field(default=0, metadata={"help": "Data loader worker processes."})

    def __post_init__(self) -> None:
        if self.train_files and self.train_weights and len(self.train_weights) != len(self.train_files):
            raise ValueError(
                f"train_weights has {len(self.train_weights)} entries but train_files has {len(self.train_files)}; "
                "give one weight per file or none."
            )
        if self.train_weights and any(w < 0 for w in self.train_weights):
            raise ValueError("train_weights must be non-negative.")
        if self.loss_on not in ("completion", "all"):
            raise ValueError(f"loss_on must be 'completion' or 'all', not {self.loss_on!r}.")
        if self.packed_attention not in ("isolated", "causal"):
            raise ValueError(f"packed_attention must be 'isolated' or 'causal', not {self.packed_attention!r}.")
        if self.export_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"export_dtype must be 'float32' or 'bfloat16', not {self.export_dtype!r}.")
        if self.packing and self.packed_attention == "isolated" and self.per_device_train_batch_size != 1 \
                and self.use_cpu:
            raise ValueError(
                "With isolated packing on a CPU keep per_device_train_batch_size=1 and raise "
                "gradient_accumulation_steps: padding-free packing joins the batch into one row whose attention mask "
                "grows with its square (packed_attention='causal' batches whole rows)."
            )
        if self.lr_schedule_by_time and not self.stop_at:
            raise ValueError("lr_schedule_by_time needs stop_at (the time the schedule ends).")
        self.completion_only_loss = self.loss_on == "completion"
        # A dict from a recipe, or a JSON string from the command line (TRL would parse it only later, in
        # super().__post_init__(), after the merge below).
        raw = self.dataset_kwargs or {}
        dataset_kwargs = json.loads(raw) if isinstance(raw, str) else raw
        if not isinstance(dataset_kwargs, dict):
            raise ValueError(f"dataset_kwargs must be a mapping (a JSON object on the command line), not {raw!r}.")
        self.dataset_kwargs = {**dataset_kwargs, "skip_prepare_dataset": False}
        super().__post_init__()
