"""APR demonstration throughput on one core: trees per second (median over runs).

Usage: ``OMP_NUM_THREADS=1 python benchmarks/datagen.py [--n 2000] [--runs 5] [--numbers 4]``

Two settings are timed: the ``spawnjoin-train data`` defaults (root beam 1..5, child beam root..5) and the released
APR settings (root beam 1..10, child beam root..15). Problems are generated before timing. CPU time of this process
is reported next to wall time, and the best run next to the median, since other jobs may share the machine (on a
loaded 2-core host, wall-clock throughput can halve).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

from spawnjoin.tasks.countdown import apr, make_split
from training.data import rows_of

SETTINGS = {"cli-defaults (beam 1-5, sub <=5)": (5, 5), "released (beam 1-10, sub <=15)": (10, 15)}


def run_once(problems: list, max_beam: int, max_sub: int, *, rows: bool) -> tuple[float, float]:
    rng = random.Random(0)
    wall, cpu = time.perf_counter(), time.process_time()
    for problem in problems:
        beam = rng.randint(1, max_beam)
        tree = apr(problem, beam_size=beam, sub_call_beam_size=rng.randint(beam, max_sub), rng=rng)
        if rows:
            for row in rows_of(tree):
                json.dumps(row)
    return len(problems) / (time.perf_counter() - wall), len(problems) / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--numbers", type=int, default=4)
    parser.add_argument("--rows", action="store_true", help="also serialize the SFT rows to JSON")
    args = parser.parse_args()
    problems = make_split("train", args.n, numbers=args.numbers)
    print(f"{args.n} problems, {args.numbers} numbers, {args.runs} runs" + (", with JSON rows" if args.rows else ""))
    for name, (max_beam, max_sub) in SETTINGS.items():
        results = [run_once(problems, max_beam, max_sub, rows=args.rows) for _ in range(args.runs)]
        wall = statistics.median(r[0] for r in results)
        cpu = statistics.median(r[1] for r in results)
        best = max(r[1] for r in results)
        print(f"{name:34s} median {wall:6.0f} trees/s wall, {cpu:6.0f} per CPU-second (best run {best:6.0f})")


if __name__ == "__main__":
    main()
