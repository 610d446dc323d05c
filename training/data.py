"""``spawnjoin-train data``: write SFT demonstrations from the symbolic solvers.

Output in ``--out DIR`` (``{split}`` is the ``--split`` value):

* ``{split}.jsonl``: one row per call, loadable with ``datasets.load_dataset("json", data_files=...)``; columns
  ``prompt``, ``completion``, ``problem_id``, ``thread_path``, ``role`` (parent/child), ``call_index``, ``style``,
  ``solved`` (the tree reached the goal), ``thread_solved``, ``numbers``, ``target``;
* ``{split}.trees.jsonl``: one :class:`~spawnjoin.tasks.countdown.TraceTree` per line (unless ``--no-trees``);
* ``{split}.meta.json``: the arguments, solve rate, mean child threads and token lengths of a sample;
* ``tokenizer/``: the Countdown tokenizer (unless ``--no-tokenizer``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from spawnjoin.tasks.countdown import TraceTree, add_prompt_prefix, apr, iter_split, sos_plus

TASKS = ("countdown",)


def demonstration_search_solves(problem: Any, beam: int) -> bool:
    """Whether the demonstrations' APR search solves `problem` (deterministic).

    The search: root beam `beam`, children one wider, every node spawned, two spawning levels. Tree GRPO trains only
    on problems it solves (`TreeGRPOConfig.solver_beam`) and `spawnjoin-train eval` scores models on them apart
    (`EvalConfig.solver_beam`).

    Args:
        problem (`Problem`): A Countdown problem.
        beam (`int`): The root's beam width.

    Returns:
        `bool`: True when the search reaches the target.
    """
    return apr(problem, beam_size=beam, sub_call_beam_size=beam + 1, spawn_prob=1.0, spawn_levels=2, seed=0).solved


class BeamRange(BaseModel):
    """An inclusive range a beam size is drawn from uniformly."""

    low: int = Field(ge=1)
    high: int = Field(ge=1)

    @classmethod
    def parse(cls, text: str) -> BeamRange:
        """Read ``"3"`` or ``"1-5"``.

        Raises:
            argparse.ArgumentTypeError: When ``text`` is not a positive size or range.
        """
        low, _, high = text.partition("-")
        try:
            return cls(low=int(low), high=int(high or low))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise argparse.ArgumentTypeError(f"beam must be N or MIN-MAX with N >= 1, got {text!r}") from exc

    def draw(self, rng: random.Random, floor: int = 1) -> int:
        """Draw a size, raising the range's bottom to ``floor`` (a child beam is never below the root's)."""
        low = max(self.low, floor)
        return rng.randint(low, max(low, self.high))

    def __str__(self) -> str:
        return f"{self.low}-{self.high}"


class DataConfig(BaseModel):
    """What to generate; every field is a flag of ``spawnjoin-train data``."""

    task: str = Field(default="countdown", description="Task name.")
    split: str = Field(default="train", description="Problem split: train, validation or test.")
    n: int = Field(default=1000, ge=1, description="Number of problems (trees).")
    style: str = Field(default="apr", description="apr (parent and child calls) or sos (one serialized thread).")
    out: Path = Field(description="Output directory.")
    numbers: int = Field(default=4, ge=2, le=6, description="Numbers per problem.")
    seed: int = Field(default=0, description="Seed of the problem stream and the solvers.")
    beam: BeamRange = Field(default=BeamRange(low=1, high=5), description="Root beam size range.")
    sub_beam: BeamRange = Field(default=BeamRange(low=1, high=5), description="Child beam range (>= root beam).")
    spawn_prob: float = Field(default=0.9, ge=0, le=1, description="APR: probability of spawning when possible.")
    spawn_levels: int = Field(
        default=1, ge=1, description="APR: threads above this depth may spawn (1: only the root; 2: its children too)."
    )
    spawn_order: Literal["heuristic", "generated"] = Field(
        default="heuristic", description="APR: order of sub searches in a spawn block (heuristic rank or #0,0, #0,1...)."
    )
    sub_search_prob: float = Field(default=0.5, ge=0, le=1, description="SoS+: probability of a sub-search.")
    final_path: Literal["root", "node"] = Field(
        default="root",
        description="After a goal: rewrite the path from the start node (reference) or write only the goal's last node.",
    )
    sub_call_budget: bool = Field(default=False, description="APR: prefix root prompts with 'Sub Call Budget: N '.")
    token_budget: bool = Field(default=False, description="SoS+: prefix prompts with 'Token Budget: B '.")
    solved_only: bool = Field(default=False, description="Keep only trees that reach the goal.")
    trees: bool = Field(default=True, description="Also write {split}.trees.jsonl.")
    tokenizer: bool = Field(default=True, description="Also save the tokenizer to OUT/tokenizer.")

    @field_validator("task")
    @classmethod
    def _task(cls, value: str) -> str:
        if value not in TASKS:
            raise ValueError(f"unknown task {value!r}; choose one of {TASKS}")
        return value

    @field_validator("style")
    @classmethod
    def _style(cls, value: str) -> str:
        if value not in ("apr", "sos"):
            raise ValueError("style must be 'apr' or 'sos'")
        return value


def iter_trees(cfg: DataConfig) -> Iterator[TraceTree]:
    """Solver trees for the configured split, reproducible per problem (the seed mixes in the problem id).

    Args:
        cfg (DataConfig): The configuration.

    Yields:
        TraceTree: One tree per problem, ``cfg.n`` in all (fewer kept when ``solved_only``: the stream goes on).
    """
    made = 0
    for problem in iter_split(cfg.split, numbers=cfg.numbers, seed=cfg.seed):  # type: ignore[arg-type]
        rng = random.Random(f"{cfg.seed}/{cfg.style}/{problem.id}")
        beam = cfg.beam.draw(rng)
        if cfg.style == "apr":
            tree = apr(
                problem, beam_size=beam, sub_call_beam_size=cfg.sub_beam.draw(rng, beam), spawn_prob=cfg.spawn_prob,
                spawn_levels=cfg.spawn_levels, spawn_order=cfg.spawn_order, sub_call_budget=cfg.sub_call_budget,
                final_path=cfg.final_path, rng=rng,
            )
        else:
            tree = sos_plus(
                problem, beam_size=beam, sub_search_prob=cfg.sub_search_prob, final_path=cfg.final_path, rng=rng
            )
        if cfg.solved_only and not tree.solved:
            continue
        yield tree
        made += 1
        if made >= cfg.n:
            return


def rows_of(tree: TraceTree) -> Iterator[dict[str, Any]]:
    """One SFT row per call of ``tree``.

    Args:
        tree (TraceTree): A solver tree.

    Yields:
        dict: ``prompt``, ``completion`` and metadata columns.
    """
    for thread, index, call in tree.calls():
        yield {
            "prompt": call.context,
            "completion": call.target,
            "problem_id": tree.problem.id,
            "thread_path": thread.thread_path,
            "role": thread.role,
            "call_index": index,
            "style": tree.style,
            "solved": tree.solved,
            "thread_solved": thread.solved,
            "numbers": tree.problem.numbers,
            "target": tree.problem.target,
        }


def token_budget_bin(length: int, *, step: int = 512, cap: int = 4096) -> int:
    """Smallest multiple of ``step`` holding ``length`` tokens, at most ``cap`` (SoS+ budget bins)."""
    return min(cap, step * max(1, math.ceil(length / step)))


def generate(cfg: DataConfig, *, progress: bool = True) -> dict[str, Any]:
    """Write the dataset described by ``cfg`` and return its summary (also saved as ``{split}.meta.json``).

    Args:
        cfg (DataConfig): The configuration.
        progress (bool): Show a rich progress bar. Defaults to True.

    Returns:
        dict: Counts, solve rate, mean child threads, token lengths of a sample, paths written.
    """
    cfg.out.mkdir(parents=True, exist_ok=True)
    tok = None
    if cfg.tokenizer or cfg.token_budget:
        from .tokenizer import build_tokenizer, save_tokenizer

        tok = save_tokenizer(cfg.out / "tokenizer") if cfg.tokenizer else build_tokenizer()
    rows_path = cfg.out / f"{cfg.split}.jsonl"
    trees_path = cfg.out / f"{cfg.split}.trees.jsonl"
    trees = rows = solved = children = 0
    sample: dict[str, list[int]] = {}
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        rf = stack.enter_context(rows_path.open("w"))
        tf = stack.enter_context(trees_path.open("w")) if cfg.trees else None
        bar, task = _start_progress(stack, cfg) if progress else (None, None)
        for tree in iter_trees(cfg):
            if cfg.token_budget and tok is not None and tree.style == "sos":
                # + <bos>/<eos> and the prefix itself ("Token Budget: 1024 " is at most 6 tokens)
                length = len(tok(tree.root.calls[0].text)["input_ids"]) + 1 + 6
                tree = add_prompt_prefix(tree, f"Token Budget: {token_budget_bin(length)} ")
            for row in rows_of(tree):
                rf.write(json.dumps(row) + "\n")
                rows += 1
                kind = row["role"] if tree.style == "apr" else "sos"
                if tok is not None and len(sample.setdefault(kind, [])) < 1000:
                    sample[kind].append(len(tok(row["prompt"] + row["completion"])["input_ids"]) + 1)
            if tf is not None:
                tf.write(tree.model_dump_json() + "\n")
            trees += 1
            solved += tree.solved
            children += tree.num_children
            if bar is not None and trees % 50 == 0:
                bar.update(task, completed=trees)
        if bar is not None:
            bar.update(task, completed=trees)
    elapsed = time.perf_counter() - start
    summary = {
        "config": json.loads(cfg.model_dump_json()),
        "trees": trees,
        "rows": rows,
        "solve_rate": solved / trees if trees else 0.0,
        "mean_children": children / trees if trees else 0.0,
        "seconds": round(elapsed, 2),
        "token_lengths": {k: _describe(v) for k, v in sample.items()},
        "files": {"rows": str(rows_path), "trees": str(trees_path) if cfg.trees else None},
    }
    (cfg.out / f"{cfg.split}.meta.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _describe(values: list[int]) -> dict[str, float]:
    values = sorted(values)
    return {"n": len(values), "mean": round(statistics.fmean(values), 1),
            "p95": values[int(0.95 * (len(values) - 1))], "max": values[-1]}


def _start_progress(stack: contextlib.ExitStack, cfg: DataConfig) -> tuple[Any, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = stack.enter_context(
        Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    )
    task = bar.add_task(f"{cfg.task} {cfg.style} {cfg.split} ({cfg.numbers} numbers)", total=cfg.n)
    return bar, task


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``data`` subcommand.

    Args:
        subparsers (argparse._SubParsersAction): The CLI's subparsers.

    Returns:
        argparse.ArgumentParser: The new subparser.
    """
    p = subparsers.add_parser("data", help="write SFT demonstrations from the symbolic solvers")
    p.add_argument("task", choices=TASKS)
    p.add_argument("--split", default="train", choices=("train", "validation", "test"))
    p.add_argument("--n", type=int, default=1000, help="number of problems (trees)")
    p.add_argument("--style", default="apr", choices=("apr", "sos"))
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--numbers", type=int, default=4, choices=(3, 4), help="numbers per problem")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--beam", type=BeamRange.parse, default=BeamRange(low=1, high=5), help="root beam, N or MIN-MAX")
    p.add_argument("--sub-beam", type=BeamRange.parse, default=BeamRange(low=1, high=5),
                   help="child beam, N or MIN-MAX, drawn at least as large as the root beam (APR)")
    p.add_argument("--spawn-prob", type=float, default=0.9, help="probability of spawning when possible (APR)")
    p.add_argument("--spawn-levels", type=int, default=1,
                   help="depths that may spawn: 1 only the root (reference), 2 its children too (APR)")
    p.add_argument("--spawn-order", default="heuristic", choices=("heuristic", "generated"),
                   help="order of sub searches in a spawn block: heuristic rank (reference) or #0,0, #0,1, ... (APR)")
    p.add_argument("--sub-search-prob", type=float, default=0.5, help="probability of a sub-search (SoS+)")
    p.add_argument("--final-path", default="root", choices=("root", "node"),
                   help="after a goal: the path from the start node (reference) or only the goal's last node")
    p.add_argument("--sub-call-budget", action="store_true", help="prefix root prompts with 'Sub Call Budget: N '")
    p.add_argument("--token-budget", action="store_true", help="prefix SoS+ prompts with 'Token Budget: B '")
    p.add_argument("--solved-only", action="store_true", help="keep only trees that reach the goal")
    p.add_argument("--no-trees", dest="trees", action="store_false", help="skip {split}.trees.jsonl")
    p.add_argument("--no-tokenizer", dest="tokenizer", action="store_false", help="skip OUT/tokenizer")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``spawnjoin-train data`` with parsed arguments.

    Args:
        args (argparse.Namespace): Parsed arguments.

    Returns:
        int: Exit status.
    """
    fields = {k: v for k, v in vars(args).items() if k in DataConfig.model_fields}
    cfg = DataConfig(**fields)
    summary = generate(cfg, progress=not args.quiet)
    print(json.dumps({k: summary[k] for k in ("trees", "rows", "solve_rate", "mean_children", "seconds",
                                              "token_lengths", "files")}, indent=2))
    return 0
