"""`spawnjoin-train compare`: two evaluation reports on the same problems, side by side, paired.

Two reports written by `spawnjoin-train eval` (say the APR model and the SoS+ baseline, same split, same `--n`,
same `--concurrency`) are matched problem by problem. The command prints and returns:

* accuracy of each on the common problems (scored by `--score`: `first`, the first sample, which is the greedy
  solve of a one-sample report; `pass`, some sample verifies; `sc`, the self-consistent answer verifies; for a
  one-sample report all three are the same), how many both, only A and only B solved, and the exact two-sided sign
  test (McNemar's exact test) on the discordant problems: the chance of a split at least this uneven if either
  model were equally likely to be the one that wins a discordant problem;
* mean total tokens, sequential tokens and latency of each, and the ratios B / A;
* accuracy at equal latency: for each latency budget t, the share of common problems each model solved within t
  seconds (correct and latency <= t). Latencies are those measured in the evaluation, under its concurrency, so
  they compare when both reports used the same `--concurrency` and `--torch-threads` (the command warns otherwise).
  A is "ahead at equal latency" when it solved at least as many problems as B within every budget and more within
  one.

An evaluation cut off by `--time-limit` and finished with `--start` is two reports; name both, joined by `+`
(`part1.json+part2.json`), and they compare as one (`join_reports`).
"""

from __future__ import annotations

import argparse
import json
import statistics
from math import comb
from pathlib import Path
from typing import Any

__all__ = ["SCORES", "add_parser", "compare", "format_comparison", "join_reports", "run", "sign_test"]

SCORES = {"first": "correct", "pass": "pass_at_n", "sc": "sc_at_n"}
"""`--score` name -> per-problem field of an eval report."""

_SAME_SETTINGS = ("numbers", "split", "context_window", "concurrency", "torch_threads", "temperature")


def sign_test(a_only: int, b_only: int) -> float:
    """Exact two-sided sign test on discordant pairs.

    Args:
        a_only (`int`): Problems only A solved.
        b_only (`int`): Problems only B solved.

    Returns:
        `float`: The p-value (1.0 when there is no discordant problem).
    """
    n = a_only + b_only
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(min(a_only, b_only) + 1))
    return min(1.0, 2 * tail / 2**n)


def join_reports(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from the parts of one evaluation (a run cut off by `time_limit` and its `start` rest).

    Args:
        parts (`list[dict]`): Reports of the same model and settings on disjoint problems.

    Returns:
        `dict`: The first part's name and config with every part's per-problem results, in order (the parts'
        summaries, which cover only their own problems, are left out).

    Raises:
        `ValueError`: When the parts differ in model or settings, or share a problem.
    """
    first = parts[0]
    keys = ("model", "n", *_SAME_SETTINGS, "max_threads", "max_total_tokens", "samples", "seed")
    for part in parts[1:]:
        if differ := _differing(first, part, keys):
            raise ValueError(f"the parts of one report differ in {', '.join(differ)}")
    joined = {"name": first.get("name"), "config": first.get("config", {}),
              "results": [r for part in parts for r in part["results"]]}
    if len(_rows(joined)) != len(joined["results"]):
        raise ValueError("the parts of one report share a problem")
    return joined


def _differing(a: dict[str, Any], b: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    """The config `keys` on which reports `a` and `b` disagree."""
    config_a, config_b = a.get("config", {}), b.get("config", {})
    return [k for k in keys if config_a.get(k) != config_b.get(k)]


def _load(spec: str) -> dict[str, Any]:
    return join_reports([json.loads(Path(path).read_text()) for path in spec.split("+")])


def _rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {json.dumps(r["problem"]): r for r in report["results"]}


def _solved(report: dict[str, Any], field: str) -> dict[str, bool]:
    """Problem -> solved under `field`; a one-sample report written before `pass_at_n`/`sc_at_n` uses `correct`."""
    samples = report.get("config", {}).get("samples", 1)
    solved = {}
    for r in report["results"]:
        if field not in r and samples not in (None, 1):
            raise ValueError(f"report {report.get('name')!r} ({samples} samples) has no per-problem {field!r}")
        solved[json.dumps(r["problem"])] = bool(r.get(field, r["correct"]))
    return solved


def _default_budgets(latencies: list[float], points: int = 8) -> list[float]:
    """Evenly spaced quantiles of all measured latencies, up to the largest."""
    ordered = sorted(latencies)
    picks = {ordered[min(len(ordered) - 1, round(k * (len(ordered) - 1) / points))] for k in range(1, points + 1)}
    return sorted(round(t, 1) for t in picks)


def compare(a: dict[str, Any], b: dict[str, Any], *, budgets: list[float] | None = None,
            score: str = "first") -> dict[str, Any]:
    """Pair two eval reports on their common problems.

    Args:
        a (`dict`): Report A (the JSON of `spawnjoin-train eval`).
        b (`dict`): Report B.
        budgets (`list[float]`, *optional*): Latency budgets in seconds; defaults to 8 quantiles of both reports'
            latencies.
        score (`str`, *optional*, defaults to `"first"`): What counts as solved: `"first"` (the first sample),
            `"pass"` (pass@N) or `"sc"` (self-consistency@N); see `SCORES`.

    Returns:
        `dict`: JSON-ready comparison (see the module docstring).

    Raises:
        ValueError: The reports share no problem, `score` is unknown, or a report lacks the field it needs.
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {sorted(SCORES)}, got {score!r}")
    rows_a, rows_b = _rows(a), _rows(b)
    common = [k for k in rows_a if k in rows_b]
    if not common:
        raise ValueError("the two reports share no problem: evaluate both on the same split and numbers")
    solved_a, solved_b = _solved(a, SCORES[score]), _solved(b, SCORES[score])
    pairs = [(rows_a[k], rows_b[k], solved_a[k], solved_b[k]) for k in common]  # (row a, row b, a solved, b solved)
    both = sum(ha and hb for _, _, ha, hb in pairs)
    a_only = sum(ha and not hb for _, _, ha, hb in pairs)
    b_only = sum(hb and not ha for _, _, ha, hb in pairs)
    n = len(pairs)

    def mean(side: int, key: str) -> float:
        rows = (rows_a, rows_b)[side]
        return round(statistics.fmean(rows[k][key] for k in common), 3)

    means: dict[str, dict[str, float | None]] = {}
    for key in ("total_tokens", "sequential_tokens", "latency"):
        mean_a, mean_b = mean(0, key), mean(1, key)
        means[key] = {"a": mean_a, "b": mean_b, "b_over_a": round(mean_b / mean_a, 3) if mean_a else None}
    if budgets is None:
        budgets = _default_budgets([rows[k]["latency"] for k in common for rows in (rows_a, rows_b)])
    within = [{"latency_s": t,
               "a": sum(ha and ra["latency"] <= t for ra, _, ha, _ in pairs),
               "b": sum(hb and rb["latency"] <= t for _, rb, _, hb in pairs)} for t in sorted(budgets)]
    ahead = all(w["a"] >= w["b"] for w in within) and any(w["a"] > w["b"] for w in within)
    differing = _differing(a, b, _SAME_SETTINGS)
    return {
        "a": a.get("name"), "b": b.get("name"), "common": n, "score": score,
        "accuracy": {"a": round((both + a_only) / n, 3), "b": round((both + b_only) / n, 3)},
        "solved": {"both": both, "a_only": a_only, "b_only": b_only, "a": both + a_only, "b": both + b_only},
        "difference_points": round(100 * (a_only - b_only) / n, 1),
        "sign_test_p": round(sign_test(a_only, b_only), 4),
        "means": means,
        "solved_within_latency": within,
        "a_ahead_at_equal_latency": ahead,
        "settings_differ": differing,
    }


def format_comparison(c: dict[str, Any]) -> str:
    """The comparison as plain text lines (what the command prints)."""
    s, m = c["solved"], c["means"]
    lines = [
        f"A = {c['a']}, B = {c['b']}: {c['common']} common problems, solved = {c.get('score', 'first')}",
        f"solved: A {s['a']} ({100 * c['accuracy']['a']:.1f}%), B {s['b']} ({100 * c['accuracy']['b']:.1f}%); "
        f"both {s['both']}, A only {s['a_only']}, B only {s['b_only']}; A - B = {c['difference_points']:+.1f} points, "
        f"exact sign test p = {c['sign_test_p']:.4f}",
    ]
    for key, label in (("total_tokens", "total tokens"), ("sequential_tokens", "sequential tokens"),
                       ("latency", "latency (s)")):
        lines.append(f"mean {label}: A {m[key]['a']:.1f}, B {m[key]['b']:.1f}, B/A {m[key]['b_over_a']}")
    lines.append("solved within latency t: " + ", ".join(
        f"t={w['latency_s']:g}s A {w['a']} B {w['b']}" for w in c["solved_within_latency"]))
    lines.append(f"A ahead at equal latency: {'yes' if c['a_ahead_at_equal_latency'] else 'no'}")
    if c["settings_differ"]:
        lines.append("warning: the reports differ in " + ", ".join(c["settings_differ"])
                     + "; latencies and accuracies may not compare")
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `compare` subcommand.

    Args:
        subparsers (`argparse._SubParsersAction`): The CLI's subparsers.

    Returns:
        `argparse.ArgumentParser`: The new subparser.
    """
    p = subparsers.add_parser("compare", help="pair two eval reports: sign test, token ratios, accuracy at equal latency")
    p.add_argument("a", help="report A (JSON from `spawnjoin-train eval`; parts of one run joined by '+')")
    p.add_argument("b", help="report B (the same)")
    p.add_argument("--budgets", type=float, nargs="*", default=None, metavar="SECONDS",
                   help="latency budgets (default: 8 quantiles of the measured latencies)")
    p.add_argument("--score", choices=sorted(SCORES), default="first",
                   help="what counts as solved: first sample (default), pass@N or self-consistency@N")
    p.add_argument("--out", default=None, help="also write the comparison as JSON here")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run `spawnjoin-train compare` with parsed arguments.

    Args:
        args (`argparse.Namespace`): Parsed arguments.

    Returns:
        `int`: Exit status (2 when the reports share no problem).
    """
    try:
        result = compare(_load(args.a), _load(args.b), budgets=args.budgets, score=args.score)
    except ValueError as exc:
        print(f"spawnjoin-train compare: {exc}")
        return 2
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    print(format_comparison(result))
    return 0
