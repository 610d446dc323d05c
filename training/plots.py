"""`spawnjoin-train plot`: training curves and evaluation figures with matplotlib.

* Training (`--train NAME=RUN_DIR ...`): loss against tokens seen, tokens seen against wall time, and training
  throughput (tokens per second) against wall time, read from the run's `trainer_state.json` (its `final/` or its
  newest checkpoint).
* GRPO (`--grpo NAME=RUN_DIR ...`): the mean reward and token entropy per step, and the share of trees with a
  malformed spawn block when the run logged it.
* Evaluation (`--eval [NAME=]REPORT.json ...`, written by `spawnjoin-train eval`; `NAME` replaces the report's
  own name as its label): accuracy against mean total tokens,
  mean sequential tokens and mean latency per problem, one marker per report, plus each report's cumulative curve
  (share of problems solved within x, read off the same solves: an upper-envelope view, not a separate budget run).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = [
    "add_parser",
    "load_eval_reports",
    "load_log_history",
    "malformed_share_history",
    "plot_eval",
    "plot_grpo",
    "plot_training",
    "reward_curve",
    "run",
]

_EVAL_AXES = (
    ("total_tokens", "mean_total_tokens", "total tokens per problem", "accuracy_vs_total_tokens.png"),
    ("sequential_tokens", "mean_sequential_tokens", "sequential tokens per problem (critical path)",
     "accuracy_vs_sequential_tokens.png"),
    ("latency", "mean_latency_s", "latency per problem (s)", "accuracy_vs_latency.png"),
)


def load_log_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The `log_history` of a run: `final/trainer_state.json`, else the newest checkpoint's.

    Args:
        run_dir (`str | Path`): A training output directory (or a `trainer_state.json` file).

    Returns:
        `list[dict]`: Logged entries in order.
    """
    path = Path(run_dir)
    if path.is_dir():
        candidates = [path / "final" / "trainer_state.json"]
        checkpoints = sorted(path.glob("checkpoint-*/trainer_state.json"),
                             key=lambda p: int(p.parent.name.split("-")[1]), reverse=True)
        candidates += checkpoints
        path = next((c for c in candidates if c.exists()), candidates[0])
    return json.loads(path.read_text())["log_history"]


def _with_time(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Training-loss entries with `minutes` (wall time, summed over resumed segments) and `tokens_per_second`
    (between consecutive entries) derived from `train_runtime` and `num_input_tokens_seen`."""
    entries = [dict(e) for e in history if "loss" in e and "train_runtime" in e]
    offset = previous = 0.0
    for i, e in enumerate(entries):
        runtime = float(e["train_runtime"])
        if runtime < previous:  # a resumed run restarts its clock
            offset += previous
        previous = runtime
        e["minutes"] = (offset + runtime) / 60
        if i and e["minutes"] > entries[i - 1]["minutes"]:
            dt = 60 * (e["minutes"] - entries[i - 1]["minutes"])
            e["tokens_per_second"] = (e["num_input_tokens_seen"] - entries[i - 1]["num_input_tokens_seen"]) / dt
    return entries


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training(runs: dict[str, str | Path], out_dir: str | Path) -> list[Path]:
    """Plot loss vs tokens seen, tokens seen vs time, and tokens/s vs time for each named run.

    Args:
        runs (`dict[str, str | Path]`): Run label to run directory.
        out_dir (`str | Path`): Where the PNG files go.

    Returns:
        `list[Path]`: The figures written.
    """
    plt = _plt()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    histories = {name: _with_time(load_log_history(d)) for name, d in runs.items()}
    figures = [
        ("num_input_tokens_seen", "loss", "tokens seen", "training loss (completion tokens)", "sft_loss.png"),
        ("minutes", "num_input_tokens_seen", "wall time (min)", "tokens seen", "sft_tokens_seen.png"),
        ("minutes", "tokens_per_second", "wall time (min)", "training tokens / s", "sft_throughput.png"),
    ]
    written = []
    for x, y, xlabel, ylabel, filename in figures:
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, entries in histories.items():
            points = [(e[x], e[y]) for e in entries if x in e and y in e]
            if points:
                ax.plot(*zip(*points, strict=True), label=name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if y == "loss":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / filename, dpi=120)
        plt.close(fig)
        written.append(out / filename)
    return written


def reward_curve(history: list[dict[str, Any]], window: int = 5, key: str = "reward") -> list[tuple[int, float, float]]:
    """A GRPO metric (`key`, the mean reward by default) per logged step and its trailing mean over `window` steps.

    >>> reward_curve([{"step": 1, "reward": 0.0}, {"step": 2, "reward": 0.5}, {"step": 2, "train_loss": 0.1}], 2)
    [(1, 0.0, 0.0), (2, 0.5, 0.25)]
    """
    points = [(int(e["step"]), float(e[key])) for e in history if key in e]
    out = []
    for i, (step, value) in enumerate(points):
        recent = [r for _, r in points[max(0, i - window + 1):i + 1]]
        out.append((step, value, sum(recent) / len(recent)))
    return out


_MALFORMED = "tree/malformed_share"
_PENALTY_MEAN = "rewards/malformed_spawn_reward/mean"


def malformed_share_history(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`history` with `tree/malformed_share` filled in from the penalty reward's mean where only that was logged
    (the reward is -1 for a tree with a malformed spawn, 0 otherwise, so its mean is minus the share).

    >>> malformed_share_history([{"step": 1, "rewards/malformed_spawn_reward/mean": -0.25}])[0]["tree/malformed_share"]
    0.25
    """
    return [{**e, _MALFORMED: -float(e[_PENALTY_MEAN])} if _MALFORMED not in e and _PENALTY_MEAN in e else e
            for e in history]


def plot_grpo(runs: dict[str, str | Path], out_dir: str | Path, window: int = 5) -> list[Path]:
    """Plot, per GRPO step, the mean rollout reward and the policy's mean token entropy (points) with their
    trailing means (lines) for each named run, and the share of trees with a malformed spawn when a run logged it.

    Args:
        runs (`dict[str, str | Path]`): Run label to GRPO output directory.
        out_dir (`str | Path`): Where `grpo_reward.png` goes.
        window (`int`, *optional*, defaults to `5`): Steps in the trailing mean.

    Returns:
        `list[Path]`: The figure written.
    """
    plt = _plt()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    histories = {name: malformed_share_history(load_log_history(run_dir)) for name, run_dir in runs.items()}
    panels = [("reward", "mean reward of the step's rollout trees"), ("entropy", "mean token entropy (nats)")]
    if any(_MALFORMED in e for history in histories.values() for e in history):
        panels.append((_MALFORMED, "share of trees with a malformed spawn"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4))
    for i, (name, history) in enumerate(histories.items()):
        color = f"C{i}"  # one colour per run in every panel, also where an earlier run has no curve
        for ax, (key, _) in zip(axes, panels, strict=True):
            curve = reward_curve(history, window, key=key)
            if curve:
                steps, values, means = zip(*curve, strict=True)
                ax.plot(steps, means, color=color, label=f"{name} (mean of {window} steps)")
                ax.scatter(steps, values, s=8, alpha=0.4, color=color)
    for ax, (_, label) in zip(axes, panels, strict=True):
        ax.set_xlabel("GRPO step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "grpo_reward.png", dpi=120)
    plt.close(fig)
    return [out / "grpo_reward.png"]


def load_eval_reports(items: list[str]) -> list[dict[str, Any]]:
    """Read `spawnjoin-train eval` reports given as `REPORT.json` or `NAME=REPORT.json` (`NAME` becomes the
    report's `name`, its label in the plots). An item that is itself an existing file is read as a path.

    Args:
        items (`list[str]`): The `--eval` arguments.

    Returns:
        `list[dict]`: The reports, in order.
    """
    reports = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or Path(item).is_file():
            name, path = "", item
        report = json.loads(Path(path).read_text())
        if name:
            report["name"] = name
        reports.append(report)
    return reports


def plot_eval(reports: list[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """Plot accuracy against total tokens, sequential tokens and latency for evaluation reports.

    Args:
        reports (`list[dict]`): Reports from `spawnjoin-train eval`.
        out_dir (`str | Path`): Where the PNG files go.

    Returns:
        `list[Path]`: The figures written.
    """
    plt = _plt()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for key, mean_key, xlabel, filename in _EVAL_AXES:
        fig, ax = plt.subplots(figsize=(6, 4))
        for report in reports:
            rows = report["results"]
            label = f"{report['name']} ({report['config'].get('numbers', '?')} numbers)"
            xs = sorted(r[key] for r in rows if r["correct"])
            if xs and rows:
                curve_x = [0.0] + xs
                curve_y = [0.0] + [(i + 1) / len(rows) for i in range(len(xs))]
                line, = ax.step(curve_x, curve_y, where="post", alpha=0.5)
                color = line.get_color()
            else:
                color = None
            ax.scatter([report[mean_key]], [report["accuracy"]], color=color, label=label, zorder=3)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / filename, dpi=120)
        plt.close(fig)
        written.append(out / filename)
    return written


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `plot` subcommand.

    Args:
        subparsers (`argparse._SubParsersAction`): The CLI's subparsers.

    Returns:
        `argparse.ArgumentParser`: The new subparser.
    """
    p = subparsers.add_parser("plot", help="training curves and evaluation figures (matplotlib)")
    p.add_argument("--train", nargs="*", default=[], metavar="NAME=RUN_DIR", help="training runs to plot")
    p.add_argument("--grpo", nargs="*", default=[], metavar="NAME=RUN_DIR", help="GRPO runs: reward and entropy per step")
    p.add_argument("--eval", nargs="*", default=[], metavar="[NAME=]REPORT",
                   help="eval reports (JSON) to plot, optionally labelled NAME instead of the report's name")
    p.add_argument("--out", required=True, help="output directory for the PNG files")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run `spawnjoin-train plot` with parsed arguments.

    Args:
        args (`argparse.Namespace`): Parsed arguments.

    Returns:
        `int`: Exit status.
    """
    written = []
    if args.train:
        runs = dict(item.split("=", 1) for item in args.train)
        written += plot_training(runs, args.out)
    if args.grpo:
        written += plot_grpo(dict(item.split("=", 1) for item in args.grpo), args.out)
    if args.eval:
        written += plot_eval(load_eval_reports(args.eval), args.out)
    for path in written:
        print(path)
    return 0
