"""`TreeGRPOConfig`: TRL's `GRPOConfig` plus the settings of thread-tree rollouts."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

__all__ = ["TreeGRPOConfig"]


@dataclass
class TreeGRPOConfig(GRPOConfig):
    r"""
    Configuration for `spawnjoin-train grpo`: GRPO where one rollout is a whole thread tree solved by the spawnjoin
    runtime. Every field is also a command-line flag.

    A group is `num_generations` trees for one problem; the reward is the verifier's verdict on the root's final
    path (plus an optional parallelism bonus); the group-normalised advantage is put on every sequence of the tree.

    Parameters:
        > Model and problems

        model_name_or_path (`str`):
            Local HF model directory of the SFT model to start from.
        numbers (`list[int]`, *optional*, defaults to `[4]`):
            Numbers per Countdown problem. With several sizes (`--numbers 3 4`; a recipe may give one integer)
            the problem list alternates between them, each size from its own stream (the trainer's sampler
            shuffles it, so a step draws a random mix), and each step logs the correctness of every size it
            drew (`tree/correct_3n`, `tree/correct_4n`) and the share of its groups of that size with no spread
            of verdicts, so no advantage (`tree/no_spread_3n`, `tree/no_spread_4n`).
        train_problems (`int`, *optional*, defaults to `2000`):
            Training-split problems to draw prompts from.
        problem_seed (`int`, *optional*, defaults to `0`):
            Seed of the problem stream.
        solver_beam (`int`, *optional*, defaults to `0`):
            Keep only problems the reference APR solver solves with this root beam (children one wider, every
            node spawned, two spawning levels: the demonstrations' search); 0 keeps every problem. A problem
            the imitated search cannot solve rarely gives a group any success, and so no advantage.

        > Rollouts

        context_window (`int`, *optional*, defaults to `1024`):
            Per-thread context window of each rollout.
        max_threads (`int`, *optional*, defaults to `32`):
            Most threads in one rollout tree.
        rollout_concurrency (`int`, *optional*, defaults to `64`):
            Trees solved at once (the embedded engine batches their calls).
        rollout_torch_threads (`int`, *optional*):
            Torch threads of the embedded engine used for rollouts.
        score_chunk_rows (`int`, *optional*, defaults to `32`):
            Rows per forward pass when scoring log-probabilities (old policy and loss): rows are sorted by length
            and each chunk is cut to its own columns, so smaller chunks waste less padding on trees whose rows
            differ in length.

        loss_chunk_rows (`int`, *optional*, defaults to `64`):
            Rows per loss pass: the step's rows (roots and every child call) are sorted by length and each chunk's
            backward runs before the next chunk's forward, so memory holds one chunk's activations. A 4-number
            tree has about 19 rows, so 32 trees are about 600 rows (the stage-8 run that scored them in one pass
            was killed out of memory after 20 steps). `0`: one pass over all rows (TRL's behaviour).

        > Rewards and loss

        parallel_bonus (`float`, *optional*, defaults to `0.0`):
            ThreadWeaver-style bonus added to correct rollouts: `parallel_bonus * (1 - sequential / total tokens)`.
        malformed_penalty (`float`, *optional*, defaults to `0.0`):
            Subtracted from a rollout's reward when its tree holds a spawn block the dialect refused as malformed,
            so a drifting spawn format costs reward even when the tree fails anyway.
        negative_advantage_scale (`float`, *optional*, defaults to `1.0`):
            Multiplies every negative advantage (trees below their group's mean) after TRL normalises the group:
            `1` is plain GRPO, `0` trains only on trees that beat their group (rejection-sampling fine-tuning on
            the policy's own better trees), values between weigh the push-down of failing trees against the
            push-up of succeeding ones (with most trees failing, most of a step's rows belong to failing trees).
        tree_loss_weighting (`str`, *optional*, defaults to `"per_tree"`):
            `"per_tree"`: each sequence's advantage is divided by the number of sequences of its tree, so a tree
            weighs the same however many threads it ran (APR); `"tokens"`: every token weighs the same. Only the
            advantage is divided: TRL adds the KL term (`beta`) to every token undivided, so under `"per_tree"`
            a tree of n sequences weighs its KL term about n times more, relative to its advantage, than
            under `"tokens"`.

        > Wall clock

        stop_at (`str`, *optional*):
            Deadline, `HH:MM` UTC (its next occurrence, tomorrow once today's is past) or epoch seconds: save a
            checkpoint, stop, and export `final` as usual.
        save_every_minutes (`float`, *optional*, defaults to `0`):
            Also checkpoint every this many minutes (0: only as `save_strategy` says).
        resume (`bool`, *optional*, defaults to `False`):
            Continue from the newest checkpoint in `output_dir` (weights, optimizer, learning-rate schedule, step
            count and RNG state), so a run stopped by its deadline, a kill or the end of a session picks up at the
            next step with fresh problems.

        > Memory

        malloc_mmap_threshold (`int`, *optional*, defaults to `1048576`):
            Bytes from which glibc serves (and on free returns) allocations with `mmap`, fixed for the run
            (`training.memory.fix_mmap_threshold`); 0 keeps glibc's dynamic threshold, under which the resident set
            of a long CPU run grows with freed memory the process keeps.
    """

    # Model and problems
    model_name_or_path: str | None = field(default=None, metadata={"help": "SFT model directory to start from."})
    numbers: list[int] = field(
        default_factory=lambda: [4],
        metadata={"help": "Numbers per Countdown problem; several sizes (`--numbers 3 4`) mix."},
    )
    train_problems: int = field(default=2000, metadata={"help": "Training-split problems to draw prompts from."})
    problem_seed: int = field(default=0, metadata={"help": "Seed of the problem stream."})
    solver_beam: int = field(
        default=0, metadata={"help": "Keep only problems the APR solver solves at this root beam (0: all)."}
    )

    # Rollouts
    context_window: int = field(default=1024, metadata={"help": "Per-thread context window of each rollout."})
    max_threads: int = field(default=32, metadata={"help": "Most threads in one rollout tree."})
    rollout_concurrency: int = field(default=64, metadata={"help": "Trees solved at once."})
    rollout_torch_threads: int | None = field(default=None, metadata={"help": "Torch threads of the rollout engine."})
    loss_chunk_rows: int = field(
        default=64,
        metadata={"help": "Rows per loss pass, each backpropagated before the next (0: all rows in one pass)."},
    )
    score_chunk_rows: int = field(
        default=32, metadata={"help": "Rows per forward pass when scoring log-probs (length-sorted chunks)."}
    )

    # Rewards and loss
    parallel_bonus: float = field(
        default=0.0, metadata={"help": "Bonus for correct rollouts: bonus * (1 - sequential / total tokens)."}
    )
    malformed_penalty: float = field(
        default=0.0, metadata={"help": "Subtracted from a rollout's reward when a spawn block in its tree was refused "
                                       "as malformed (0: off)."}
    )
    negative_advantage_scale: float = field(
        default=1.0, metadata={"help": "Multiplies negative advantages (1: plain GRPO; 0: train only on trees that "
                                       "beat their group)."}
    )
    tree_loss_weighting: str = field(
        default="per_tree",
        metadata={"help": "'per_tree' divides each sequence's advantage by its tree's sequence count; 'tokens' "
                          "weighs every token the same.", "choices": ["per_tree", "tokens"]},
    )

    # Wall clock
    stop_at: str | None = field(
        default=None,
        metadata={"help": "Deadline, HH:MM UTC (next occurrence) or epoch seconds: save, stop, export final."},
    )
    save_every_minutes: float = field(default=0.0, metadata={"help": "Checkpoint every this many minutes (0: off)."})
    resume: bool = field(default=False, metadata={"help": "Resume from the newest checkpoint in output_dir."})

    # Memory
    malloc_mmap_threshold: int = field(
        default=1 << 20, metadata={"help": "Fixed glibc mmap threshold in bytes, so freed buffers leave the process "
                                           "(0: glibc's dynamic threshold)."}
    )

    # Defaults that differ from GRPOConfig: a small model on a CPU, one generation per optimizer step.
    use_cpu: bool = field(default=True, metadata={"help": "Train on the CPU (required on a machine with no GPU)."})
    # TRL widens TrainingArguments.bf16 to `bool | None` (None: on unless fp16); the field keeps TRL's type.
    bf16: bool | None = field(  # type: ignore[assignment]
        default=False, metadata={"help": "bf16 mixed precision (off on CPU for GRPO)."}
    )
    num_generations: int | None = field(default=4, metadata={"help": "Rollout trees per problem (group size)."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Root rollouts per step."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    steps_per_generation: int | None = field(
        default=1,
        metadata={"help": "Optimizer steps per generation; 1 keeps every tree's rows in one batch (child rows are "
                          "appended, so the row count is not a multiple of anything)."},
    )
    learning_rate: float = field(default=1e-5, metadata={"help": "Learning rate (APR: 1e-5)."})
    beta: float = field(default=0.0, metadata={"help": "KL coefficient (0: no reference model)."})
    temperature: float = field(default=1.0, metadata={"help": "Rollout sampling temperature."})
    max_completion_length: int | None = field(default=1024, metadata={"help": "Longest completion of one row."})
    logging_steps: float = field(default=1, metadata={"help": "Log every this many steps."})
    save_strategy: str = field(default="no", metadata={"help": "Checkpoint strategy."})
    report_to: str | list[str] = field(default="none", metadata={"help": "Experiment trackers to log to."})

    def __post_init__(self) -> None:
        if isinstance(self.numbers, int):  # a recipe's `numbers: 4`
            self.numbers = [self.numbers]
        if not self.numbers or any(not isinstance(n, int) or n < 2 for n in self.numbers):
            raise ValueError(f"numbers must be one or more problem sizes of at least 2, not {self.numbers!r}")
        if not 0.0 <= self.negative_advantage_scale <= 1.0:
            raise ValueError(f"negative_advantage_scale must be in [0, 1], not {self.negative_advantage_scale!r}")
        if self.tree_loss_weighting not in ("per_tree", "tokens"):
            raise ValueError(f"tree_loss_weighting must be 'per_tree' or 'tokens', not {self.tree_loss_weighting!r}")
        if self.steps_per_generation not in (None, 1):
            raise ValueError(
                "tree rollouts append child rows after scoring, so one generation must feed exactly one optimizer "
                "step: set steps_per_generation=1 (and raise per_device_train_batch_size instead)."
            )
        if self.loss_chunk_rows < 0:
            raise ValueError("loss_chunk_rows must be >= 0")
        if self.score_chunk_rows < 1:
            raise ValueError("score_chunk_rows must be >= 1")
        if self.solver_beam < 0:
            raise ValueError("solver_beam must be >= 0")
        if self.parallel_bonus < 0:
            raise ValueError("parallel_bonus must be >= 0")
        if self.malformed_penalty < 0:
            raise ValueError("malformed_penalty must be >= 0 (it is subtracted)")
        super().__post_init__()
