"""`spawnjoin-train eval`: accuracy of a model on held-out Countdown problems, solved through the spawnjoin runtime.

Every problem is solved with `spawnjoin.solve(prompt, backend=EmbeddedBackend(model_dir), dialect="apr",
budget=Budget(context_window=..., ...))`; many solves run concurrently (`asyncio.gather` under a semaphore) so the
embedded engine batches their requests. A solve is correct when the Countdown verifier accepts the final path of
the root's transcript (`verify_path`), which replays every operation of it from the problem's numbers. The rule
is `--path-rule`: `node` (default; the path may start at any node, its `Operations` list replayed) or `root` (the
reference's: the path is rewritten from `Node #0`); every report also counts the problems the `root` rule accepts.

A serialized (SoS+) model runs through the same runtime and dialect: it never writes a spawn block, so its solve is
one thread. With `--samples N` each problem is solved N times (temperature sampling, concurrently) and scored two
ways: `pass@N` (some sample verifies: best-of-N with the verifier as the oracle) and `sc@N` (self-consistency: the
most frequent claimed operation sequence is checked). Tokens add up over samples, the sequential tokens and the
latency are those of the slowest sample, since the samples run in parallel.

Per problem the report keeps: correct, total tokens, sequential tokens (critical path), threads, largest context,
and wall latency (seconds from the solve's start to its end, under the concurrency used; latencies are comparable
between models evaluated with the same `--concurrency`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["EvalConfig", "ProblemResult", "add_parser", "evaluate", "run", "summarize"]


@dataclass
class EvalConfig:
    """Configuration of `spawnjoin-train eval`.

    Args:
        model (`str`): Local HF model directory.
        name (`str`, *optional*): Label of this run in the report and plots; defaults to the directory name.
        numbers (`int`, *optional*, defaults to `4`): Numbers per Countdown problem.
        n (`int`, *optional*, defaults to `100`): Held-out test problems (the first n of the test split).
        split (`str`, *optional*, defaults to `"test"`): Problem split; never the training split.
        context_window (`int`, *optional*, defaults to `1024`): Per-thread context window in tokens.
        max_threads (`int`, *optional*, defaults to `64`): Most threads per solve.
        max_total_tokens (`int`, *optional*): Most generated tokens per solve (None: no limit).
        sub_call_budget (`int`, *optional*): `Sub Call Budget: N ` prefix, for models trained with it.
        samples (`int`, *optional*, defaults to `1`): Solves per problem (pass@N and self-consistency).
        temperature (`float`, *optional*, defaults to `0.0`): Sampling temperature (0: greedy; use > 0 with
            `samples > 1`).
        concurrency (`int`, *optional*, defaults to `32`): Solves in flight at once.
        torch_threads (`int`, *optional*): Torch threads of the embedded engine.
        seed (`int`, *optional*, defaults to `0`): Seed of the problem stream and the sampler.
        time_limit (`float`, *optional*): Seconds; problems not started by then are skipped (and counted), so an
            evaluation fits a time slot. The problems solved are the first ones of the split, in order.
        start (`int`, *optional*, defaults to `0`): Solve only problems `start` to `n - 1` of the split: finishes
            an evaluation that `time_limit` cut off (its report's `problems` is where to start).
        out (`str`, *optional*): Write the JSON report here.
        traces_dir (`str`, *optional*): Also write every solve's trace here.
        path_rule (`str`, *optional*, defaults to `"node"`): Verifier rule for the final path (`node` or `root`,
            see `spawnjoin.tasks.countdown.verify_path`).
        solver_beam (`int`, *optional*, defaults to `3`): Also score the problems the demonstrations' search
            solves with this root beam apart (`training.data.demonstration_search_solves`; the problems tree GRPO
            trains on with the same `solver_beam`); 0 turns it off.
    """

    model: str
    name: str | None = None
    numbers: int = 4
    n: int = 100
    split: str = "test"
    context_window: int = 1024
    max_threads: int = 64
    max_total_tokens: int | None = None
    sub_call_budget: int | None = None
    samples: int = 1
    temperature: float = 0.0
    concurrency: int = 32
    torch_threads: int | None = None
    seed: int = 0
    time_limit: float | None = None
    start: int = 0
    out: str | None = None
    traces_dir: str | None = None
    path_rule: str = "node"
    solver_beam: int = 3

    def __post_init__(self) -> None:
        if self.path_rule not in ("node", "root"):
            raise ValueError(f"path_rule must be 'node' or 'root', not {self.path_rule!r}")
        if self.split == "train":
            raise ValueError("evaluate on 'test' or 'validation'; the train split is what models were trained on")
        if self.solver_beam < 0:
            raise ValueError(f"solver_beam must be 0 (off) or a beam width, not {self.solver_beam}")
        if self.samples > 1 and self.temperature == 0:
            raise ValueError("samples > 1 with temperature 0 repeats one greedy solve; set --temperature (e.g. 1.0)")
        if not 0 <= self.start < self.n:
            raise ValueError(f"start must be in [0, n), not {self.start} with n={self.n}")
        if self.name is None:
            self.name = Path(self.model).name


@dataclass
class ProblemResult:
    """The outcome on one problem (over all its samples)."""

    problem: str
    correct: bool
    pass_at_n: bool
    sc_at_n: bool
    total_tokens: int
    sequential_tokens: int
    threads: int
    max_context: int
    latency: float
    statuses: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    step_stats: dict[str, Any] = field(default_factory=dict)
    malformed_spawns: int = 0
    malformed_spawns_per_sample: list[int] = field(default_factory=list)
    root_step_stats: dict[str, Any] = field(default_factory=dict)
    first_step_operands_available: bool | None = None
    root_spawned: bool = False
    child_goal: bool = False
    child_goal_verified: bool = False
    root_child_reachable: bool = False
    reachable_children: int = 0
    reachable_children_verified: int = 0
    root_rule_correct: bool | None = None
    solver_solved: bool | None = None


def _claimed_operations(text: str) -> tuple[str, ...] | None:
    """The operations of the final path a transcript claims (verified or not), for self-consistency votes."""
    from spawnjoin.tasks.countdown.verify import _LISTED_OP_RE, EXPLORE_RE, STATE_RE, _final_path_lines

    lines = _final_path_lines(text, "node")
    if isinstance(lines, str):
        return None
    ops: list[str] = []
    for k, line in enumerate(lines):
        if k == 1 and (state := STATE_RE.fullmatch(line)):  # the path's first node lists the operations before it
            ops.extend(_LISTED_OP_RE.findall(state.group(3)))
        elif EXPLORE_RE.fullmatch(line):
            ops.append(line.split(",")[0].removeprefix("Exploring Operation: "))
    return tuple(ops) or None


async def _solve_problem(problem: Any, backend: Any, cfg: EvalConfig, sem: asyncio.Semaphore,
                         index: int, deadline: float | None = None) -> ProblemResult | None:
    import spawnjoin
    from spawnjoin.backends.base import SamplingParams
    from spawnjoin.tasks.countdown import StepStats, root_prompt, state_reachable, step_stats, verify_path
    from spawnjoin.tasks.countdown.verify import GOAL_RE

    from .data import demonstration_search_solves

    prompt = root_prompt(problem, sub_call_budget=cfg.sub_call_budget)
    budget = spawnjoin.Budget(context_window=cfg.context_window, max_threads=cfg.max_threads,
                              max_total_tokens=cfg.max_total_tokens)

    async def one(k: int) -> Any:
        sampling = SamplingParams(temperature=cfg.temperature)
        async with sem:
            if deadline is not None and time.perf_counter() > deadline:
                return None
            result = await spawnjoin.solve(prompt, backend=backend, dialect="apr", budget=budget, sampling=sampling)
        if cfg.traces_dir:
            result.trace.save(Path(cfg.traces_dir) / f"{index:05d}-{k}.json")
        return result

    results = await asyncio.gather(*(one(k) for k in range(cfg.samples)))
    if any(r is None for r in results):
        return None
    verdicts = [verify_path(problem, r.text, rule=cfg.path_rule) for r in results]  # type: ignore[arg-type]
    votes = Counter(ops for r in results if (ops := _claimed_operations(r.text)) is not None)
    sc = False
    if votes:
        top = votes.most_common(1)[0][0]
        sc = any(v.ok and tuple(v.operations) == top for v in verdicts)
    metrics = [r.metrics for r in results]
    # Step quality of every thread of the first sample: arithmetic, operand availability, result lists.
    stats = root_stats = StepStats()
    first_ok = None
    first = results[0].trace
    root_spawned = child_goal = child_verified = False
    live_children = live_children_verified = 0
    for thread in first.walk():
        if thread.parent_id is not None:
            root_spawned = True
            child_goal = child_goal or GOAL_RE.search(thread.transcript) is not None
            # a returned path verifies when its listed operations and its lines replay from the problem's numbers
            verified = bool(thread.result and verify_path(problem, thread.result).ok)
            child_verified = child_verified or verified
            # the root handed this child a true state from which the goal can still be reached
            if thread.parent_id == first.root_id and state_reachable(problem, thread.prompt):
                live_children += 1
                live_children_verified += verified
        if thread.calls:
            own = step_stats(thread.transcript)
            stats = stats + own
            if thread.id == first.root_id:
                root_stats = own
                first_ok = _first_step_reads_state(thread.transcript)
    malformed = [r.trace.malformed_spawns for r in results]
    return ProblemResult(
        problem=str(problem),
        correct=verdicts[0].ok,
        pass_at_n=any(v.ok for v in verdicts),
        sc_at_n=sc,
        total_tokens=sum(m.total_tokens for m in metrics),
        sequential_tokens=max(m.sequential_tokens for m in metrics),
        threads=sum(m.threads for m in metrics),
        max_context=max(m.max_context for m in metrics),
        latency=max(m.wall_time for m in metrics),
        statuses=[r.status for r in results],
        reasons=[v.reason for v in verdicts],
        step_stats=stats.model_dump(),
        malformed_spawns=malformed[0],
        malformed_spawns_per_sample=malformed,
        root_step_stats=root_stats.model_dump(),
        first_step_operands_available=first_ok,
        root_spawned=root_spawned,
        child_goal=child_goal,
        child_goal_verified=child_verified,
        root_child_reachable=live_children > 0,
        reachable_children=live_children,
        reachable_children_verified=live_children_verified,
        root_rule_correct=verify_path(problem, results[0].text, rule="root").ok,
        solver_solved=demonstration_search_solves(problem, cfg.solver_beam) if cfg.solver_beam else None,
    )


def _first_step_reads_state(transcript: str) -> bool | None:
    """Whether the first `Exploring Operation` line takes both operands from the state before it (`None`: no step)."""
    from spawnjoin.tasks.countdown import step_stats

    start = transcript.find("Exploring Operation: ")
    if start < 0:
        return None
    end = transcript.find("\n", start)
    stats = step_stats(transcript if end < 0 else transcript[:end])
    return stats.steps == 1 and stats.operands_available == 1


def summarize(cfg: EvalConfig, results: list[ProblemResult], seconds: float, skipped: int = 0) -> dict[str, Any]:
    """The report: configuration, aggregate figures and per-problem rows.

    Args:
        cfg (`EvalConfig`): The evaluation configuration.
        results (`list[ProblemResult]`): One entry per problem.
        seconds (`float`): Wall time of the whole evaluation.
        skipped (`int`, *optional*, defaults to `0`): Problems not started before the time limit.

    Returns:
        `dict`: JSON-ready report.
    """
    n = len(results)

    def mean(values: list[float]) -> float:
        return round(statistics.fmean(values), 3) if values else 0.0

    return {
        "name": cfg.name,
        "config": asdict(cfg),
        "problems": n,
        "skipped": skipped,
        "accuracy": mean([r.correct for r in results]),
        # the same solves under the reference's rule (final path rewritten from Node #0)
        "accuracy_root_rule": mean([bool(r.root_rule_correct) for r in results]),
        f"pass@{cfg.samples}": mean([r.pass_at_n for r in results]),
        f"sc@{cfg.samples}": mean([r.sc_at_n for r in results]),
        "mean_total_tokens": mean([r.total_tokens for r in results]),
        "mean_sequential_tokens": mean([r.sequential_tokens for r in results]),
        "mean_threads": mean([r.threads for r in results]),
        "mean_latency_s": mean([r.latency for r in results]),
        "max_context": max((r.max_context for r in results), default=0),
        "wall_seconds": round(seconds, 1),
        "steps": _step_summary([r.step_stats for r in results]),
        # The same pooled over root threads only, and whether each root's first step took its operands from the
        # prompt's state (children's steps are `steps` minus these).
        "root_steps": _step_summary([r.root_step_stats for r in results]),
        "first_step_operands_available": mean([r.first_step_operands_available for r in results
                                               if r.first_step_operands_available is not None]),
        # trees with a refused spawn block: the first sample of each problem (like the step figures above), and
        # every sample (the same figure when samples == 1)
        "malformed_spawn_share": mean([r.malformed_spawns > 0 for r in results]),
        "malformed_spawn_share_all_samples": mean([m > 0 for r in results for m in r.malformed_spawns_per_sample]),
        # How often the root spawned at all, and how often a spawned thread claimed the goal but the root's final
        # path did not verify (the search found it; the join or the path the root wrote lost it).
        "root_spawn_share": mean([r.root_spawned for r in results]),
        "child_goal_lost_share": mean([r.child_goal and not r.correct for r in results]),
        # the same counting only returned paths that verify (a child's claim may be wrong): what a perfect copy of
        # the join would have added
        "child_goal_verified_lost_share": mean([r.child_goal_verified and not r.correct for r in results]),
        # how often the root handed some child a true state from which the goal can be reached: the ceiling its own
        # expansion leaves to the search below it
        "root_child_reachable_share": mean([r.root_child_reachable for r in results]),
        # of the root's children handed such a state, the share whose search returned a path that verifies: how
        # well the children convert the root's live states (the rest chose only dead operations or lost the path)
        "reachable_child_verified_share": _ratio(sum(r.reachable_children_verified for r in results),
                                                 sum(r.reachable_children for r in results)),
        # the problems the demonstrations' search solves (`solver_beam`; None when off): how many, the first sample's
        # accuracy on them (the distribution tree GRPO trains on) and the problems solved outside them
        **_solver_split(results, on=bool(cfg.solver_beam)),
        "failure_reasons": Counter(r.reasons[0].split(" (")[0][:60] for r in results if not r.correct).most_common(8),
        "results": [asdict(r) for r in results],
    }


def _solver_split(results: list[ProblemResult], *, on: bool) -> dict[str, Any]:
    """How many problems the demonstrations' search solves, the accuracy on them and the problems solved elsewhere
    (all None when the split is off)."""
    if not on:
        return dict.fromkeys(("solver_solved", "accuracy_on_solver_solved", "solved_outside_solver"))
    inside = [r.correct for r in results if r.solver_solved]
    return {"solver_solved": len(inside), "accuracy_on_solver_solved": _ratio(sum(inside), len(inside)),
            "solved_outside_solver": sum(r.correct for r in results if not r.solver_solved)}


def _ratio(part: int, whole: int) -> float | None:
    """`part / whole` to three places, `None` when `whole` is 0."""
    return round(part / whole, 3) if whole else None


def _step_summary(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool per-problem step statistics: shares of correct arithmetic, available operands, consistent results."""
    steps = sum(s.get("steps", 0) for s in stats)

    def share(key: str) -> float:
        return round(sum(s.get(key, 0) for s in stats) / steps, 3) if steps else 0.0

    by_op = {}
    for op in "+-*/":
        total = sum(s["by_operator"][op]["total"] for s in stats if s)
        correct = sum(s["by_operator"][op]["correct"] for s in stats if s)
        by_op[op] = _ratio(correct, total)
    return {"steps": steps, "arithmetic_accuracy": share("correct"), "operands_available": share("operands_available"),
            "results_consistent": share("results_consistent"), "arithmetic_by_operator": by_op}


async def evaluate(cfg: EvalConfig, *, backend: Any = None) -> dict[str, Any]:
    """Solve `cfg.n` held-out problems through the runtime and return the report (also written to `cfg.out`).

    Args:
        cfg (`EvalConfig`): The configuration.
        backend (`Backend`, *optional*): A backend to use instead of `EmbeddedBackend(cfg.model)` (tests pass a
            scripted one).

    Returns:
        `dict`: The report (see `summarize`).
    """
    from spawnjoin.tasks.countdown import make_split

    problems = make_split(cfg.split, cfg.n, numbers=cfg.numbers, seed=cfg.seed)  # type: ignore[arg-type]
    own = backend is None
    if own:
        from spawnjoin.backends.embedded import EmbeddedBackend

        backend = EmbeddedBackend(cfg.model, torch_threads=cfg.torch_threads, seed=cfg.seed)
    sem = asyncio.Semaphore(cfg.concurrency)
    start = time.perf_counter()
    deadline = start + cfg.time_limit if cfg.time_limit else None
    try:
        results = await asyncio.gather(
            *(_solve_problem(p, backend, cfg, sem, i, deadline)
              for i, p in enumerate(problems[cfg.start:], start=cfg.start)))
    finally:
        if own:
            await backend.aclose()
    done = [r for r in results if r is not None]
    report = summarize(cfg, done, time.perf_counter() - start, skipped=len(results) - len(done))
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(json.dumps(report, indent=1) + "\n")
    return report


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `eval` subcommand.

    Args:
        subparsers (`argparse._SubParsersAction`): The CLI's subparsers.

    Returns:
        `argparse.ArgumentParser`: The new subparser.
    """
    p = subparsers.add_parser("eval", help="accuracy on held-out Countdown problems through the spawnjoin runtime")
    p.add_argument("model", help="local HF model directory")
    defaults = EvalConfig(model="")
    for name, kind, help_ in [
        ("name", str, "label in the report"),
        ("numbers", int, "numbers per problem"),
        ("n", int, "held-out problems"),
        ("split", str, "test or validation"),
        ("context_window", int, "per-thread context window in tokens"),
        ("max_threads", int, "most threads per solve"),
        ("max_total_tokens", int, "most generated tokens per solve"),
        ("sub_call_budget", int, "'Sub Call Budget: N ' prefix (models trained with it)"),
        ("samples", int, "solves per problem (pass@N, self-consistency)"),
        ("temperature", float, "sampling temperature (0 = greedy)"),
        ("concurrency", int, "solves in flight at once"),
        ("torch_threads", int, "torch threads of the embedded engine"),
        ("seed", int, "seed"),
        ("time_limit", float, "seconds; problems not started by then are skipped"),
        ("start", int, "solve problems start..n-1 only (finishes a cut-off evaluation)"),
        ("out", str, "write the JSON report here"),
        ("traces_dir", str, "write every solve's trace here"),
        ("path_rule", str, "final-path rule of the verifier: node or root"),
        ("solver_beam", int, "score the problems the demonstrations' search solves with this beam apart (0: off)"),
    ]:
        default = getattr(defaults, name) if name != "name" else None
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=default,
                       help=f"{help_} (default: {default})")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run `spawnjoin-train eval` with parsed arguments and print the summary.

    Args:
        args (`argparse.Namespace`): Parsed arguments.

    Returns:
        `int`: Exit status.
    """
    fields = {k: v for k, v in vars(args).items() if k in EvalConfig.__dataclass_fields__}
    cfg = EvalConfig(**fields)
    report = asyncio.run(evaluate(cfg))
    print(json.dumps({k: v for k, v in report.items() if k not in ("results", "config")}, indent=1))
    return 0
