"""APR vs SoS+ on the same held-out Countdown problems, through the runtime on the embedded engine.

For each model: accuracy, mean total tokens, mean sequential (critical-path) tokens, their ratio, and mean
wall latency per problem, all from one run over the same problems with the same per-thread context window;
then the side-by-side ratios and the plots (accuracy vs total tokens, vs sequential tokens, vs latency).
The two models run one after the other on the same engine settings, so latencies are comparable.

    python benchmarks/speedup.py --sos runs/countdown-sos-stage4/final [--apr DIR] [--n 100] [--numbers 4]

`--apr` defaults to the shipped model. The SoS+ baseline is not shipped (its recipe is
training/recipes/countdown-sos.yaml); without `--sos` only the APR figures are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from pathlib import Path

from training.compare import compare, format_comparison
from training.evaluate import EvalConfig, evaluate

SHIPPED = Path(__file__).resolve().parents[1] / "spawnjoin" / "models" / "countdown-apr"


def row(report: dict) -> str:
    total, seq = report["mean_total_tokens"], report["mean_sequential_tokens"]
    ratio = seq / total if total else 0.0
    return (
        f"{report['name']:<16} acc {report['accuracy']:6.1%}  total {total:8.0f}  sequential {seq:8.0f}  "
        f"seq/total {ratio:5.2f}  threads {report['mean_threads']:5.1f}  latency mean {report['mean_latency_s']:6.2f} s"
        f" median {report['median_latency_s'] if 'median_latency_s' in report else _median_latency(report):6.2f} s"
    )


def _median_latency(report: dict) -> float:
    rows = report.get("results") or []
    return statistics.median(r["latency"] for r in rows) if rows else 0.0


def _common(report: dict, reports: list[dict]) -> dict:
    """`report` restricted to the problems every report finished (a time limit can leave some unstarted)."""
    shared = set.intersection(*({r["problem"] for r in rep["results"]} for rep in reports))
    rows = [r for r in report["results"] if r["problem"] in shared]
    mean = (lambda key: statistics.fmean(r[key] for r in rows)) if rows else (lambda key: 0.0)
    return {"name": report["name"], "problems": len(rows),
            "accuracy": mean("correct"), "mean_total_tokens": mean("total_tokens"),
            "mean_sequential_tokens": mean("sequential_tokens"), "mean_threads": mean("threads"),
            "mean_latency_s": mean("latency"), "median_latency_s": _median_latency({"results": rows}),
            "results": rows}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apr", default=str(SHIPPED), help="APR model directory (default: the shipped one)")
    parser.add_argument("--sos", default=None, help="SoS+ model directory (not shipped; see the recipe)")
    parser.add_argument("--n", type=int, default=100, help="held-out test problems")
    parser.add_argument("--numbers", type=int, default=4, choices=(3, 4))
    parser.add_argument("--context-window", type=int, default=1024)
    parser.add_argument("--max-threads", type=int, default=16, help="APR thread budget per problem")
    parser.add_argument("--max-total-tokens", type=int, default=8192, help="APR token budget per problem")
    parser.add_argument("--concurrency", type=int, default=16, help="solves in flight (the engine batches them)")
    parser.add_argument("--torch-threads", type=int, default=None, help="torch threads of the embedded engine")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds per model after which no new problem starts (the report counts skipped ones)")
    parser.add_argument("--out", default="runs/speedup", help="reports, traces and plots go here")
    args = parser.parse_args()

    out = Path(args.out)
    reports = []
    for name, model in (("apr", args.apr), ("sos+", args.sos)):
        if model is None:
            continue
        cfg = EvalConfig(model=model, name=name, n=args.n, numbers=args.numbers,
                         context_window=args.context_window, max_threads=args.max_threads,
                         max_total_tokens=args.max_total_tokens, concurrency=args.concurrency,
                         torch_threads=args.torch_threads, time_limit=args.time_limit,
                         out=str(out / f"{name}.json"), traces_dir=str(out / f"traces-{name}"))
        reports.append(await evaluate(cfg))
        print(row(reports[-1]), flush=True)
    if len(reports) == 2:
        apr, sos = (_common(r, reports) for r in reports)
        print(f"side by side on the {apr['problems']} problems both models finished:")
        print(row(apr))
        print(row(sos))
        print(f"accuracy difference (APR - SoS+): {100 * (apr['accuracy'] - sos['accuracy']):+.1f} points")
        if apr["mean_latency_s"]:
            print(f"latency ratio SoS+/APR: {sos['mean_latency_s'] / apr['mean_latency_s']:.2f}")
        if apr["median_latency_s"]:
            print(f"median latency ratio SoS+/APR: {sos['median_latency_s'] / apr['median_latency_s']:.2f}")
        # pairing, sign test and accuracy within latency budgets (here SoS+'s latency quartiles): `spawnjoin-train compare`
        quartiles = statistics.quantiles([r["latency"] for r in sos["results"]], n=4) if len(sos["results"]) > 1 else None
        print(format_comparison(compare(reports[0], reports[1], budgets=quartiles)))
        if apr["mean_sequential_tokens"]:
            print(f"sequential tokens ratio SoS+/APR: {sos['mean_sequential_tokens'] / apr['mean_sequential_tokens']:.2f}")
    try:
        from training.plots import plot_eval

        for path in plot_eval(reports, out):
            print("plot:", path)
    except ImportError:
        print("matplotlib missing: no plots (pip install 'spawnjoin[train]')")


if __name__ == "__main__":
    asyncio.run(main())
