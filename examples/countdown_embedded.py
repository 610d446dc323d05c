"""Solve Countdown problems in-process with the shipped model: no server, nothing downloaded.

What it shows:

* `EmbeddedBackend()` loads the model shipped in `spawnjoin/models/countdown-apr` (or `--model DIR`) and
  runs it on transformers' continuous batching. One backend is shared by several concurrent solves: every
  thread of every solve is one request of the same batch, so spawned children decode side by side.
* `spawnjoin.solve(problem, task="countdown")` turns "24 4 9 3" (target first) into the APR root prompt
  and returns an answer only when the root's final path verifies (`spawnjoin.tasks.countdown.verify_path`).
* `Budget(context_window=1024)`: the window the model was trained with; each request's `max_tokens` is sized
  so that prompt + `max_tokens` fits it.
* Metrics: total tokens (all threads) against sequential tokens (the critical path: what the latency would
  be if every spawn's children decoded fully in parallel).

The shipped model is small (5.1M parameters, trained on a 2-core CPU; docs/results.md has its accuracy), so
expect some problems without an answer. An answer, when printed, has been verified.

Run it:  python examples/countdown_embedded.py
         python examples/countdown_embedded.py "24 4 9 3" "10 5 4 44 14" --save-dir traces/

Expected output: one line per problem: the answer (or `-`), whether it verifies, the status, threads, spawns,
total / sequential tokens, and why the root ended early if it did. From a mid-training checkpoint of the
shipped model (step 400), for instance:

    10 5 4 44 14    answer -                    verified no   status done  threads 1  spawns 0  tokens 239 / 239 sequential  (malformed spawn: <End Calling Sub Searches> without <Calling Sub Searches>)

then the totals (`all: 0/4 solved, 1055 tokens, 1055 sequential (the critical path is 100% of all tokens)`).
Each saved trace opens with `spawnjoin show DIR/problem-0.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import spawnjoin
from spawnjoin import Budget
from spawnjoin.backends.embedded import EmbeddedBackend
from spawnjoin.tasks.countdown import parse_problem, verify_path

PROBLEMS = ["24 4 9 3", "10 5 4 44 14", "86 90 2 8", "63 7 3 6 2"]


async def solve_all(args: argparse.Namespace) -> None:
    budget = Budget(
        context_window=1024,  # the shipped model's training window
        max_threads=32,  # at most 32 threads per solve
        max_total_tokens=args.max_total_tokens,  # None: no limit
    )
    # One engine for every solve; `torch_threads` keeps it polite on a shared machine.
    async with EmbeddedBackend(args.model, torch_threads=args.torch_threads) as backend:
        print(f"model: {backend.path}")
        start = time.perf_counter()
        results = await asyncio.gather(
            *(
                spawnjoin.solve(
                    problem,
                    backend=backend,
                    task="countdown",
                    budget=budget,
                    trace_path=Path(args.save_dir, f"problem-{i}.json") if args.save_dir else None,
                )
                for i, problem in enumerate(args.problems)
            )
        )
        elapsed = time.perf_counter() - start

    total = sequential = 0
    for problem, result in zip(args.problems, results, strict=True):
        m = result.metrics
        # The task already verified the answer; check again here to show how.
        verified = result.answer is not None and verify_path(parse_problem(problem), result.text).ok
        print(
            f"{problem:<15} answer {result.answer or '-':<20} verified {'yes' if verified else 'no ':<3}  "
            f"status {result.status}  threads {m.threads}  spawns {m.spawns}  "
            f"tokens {m.total_tokens} / {m.sequential_tokens} sequential"
            # why the root ended early, if it did (token budget, a malformed spawn block, a full window)
            + (f"  ({result.trace.root.reason})" if result.trace.root.reason else "")
        )
        total += m.total_tokens
        sequential += m.sequential_tokens
    solved = sum(r.answer is not None for r in results)
    share = sequential / total if total else 1.0
    print(f"all: {solved}/{len(results)} solved, {total} tokens, {sequential} sequential "
          f"(the critical path is {share:.0%} of all tokens), {elapsed:.1f} s wall")
    if args.save_dir:
        print(f"traces in {args.save_dir}/; view one with: spawnjoin show {args.save_dir}/problem-0.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problems", nargs="*", default=PROBLEMS, help="target first, e.g. '24 4 9 3'")
    parser.add_argument("--model", metavar="DIR", help="a local model directory (default: the shipped model)")
    parser.add_argument("--max-total-tokens", type=int, help="token budget per solve (default: none)")
    parser.add_argument("--torch-threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--save-dir", metavar="DIR", help="write each solve's trace here")
    asyncio.run(solve_all(parser.parse_args()))


if __name__ == "__main__":
    main()
