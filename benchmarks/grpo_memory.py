"""Peak memory and step time of tree GRPO with the loss in one pass against the loss in row chunks.

Each setting runs in its own process (the peak resident set is per process) from the same recipe, seed and model
for the same few steps, so both see the same problems; the sampled trees differ only where the weights have
moved apart (after the first step). Prints, per setting, the peak resident set, the resident set after each
rollout, the rows per tree and the median step time, then the ratios side by side.

    python benchmarks/grpo_memory.py --recipe training/recipes/countdown-apr-grpo-stage8.yaml \
        --model_name_or_path spawnjoin/models/countdown-apr --steps 2 --chunks 0 64

Run it from the repository root, with nothing else on the machine (it takes a few CPU-minutes per step at 4
numbers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

CHILD = """
import json, sys
from training.grpo import train
from training.grpo_config import TreeGRPOConfig
from training.recipe import config_from
from training.memory import peak_resident_gb

recipe, overrides = sys.argv[1], json.loads(sys.argv[2])
cfg = config_from(recipe or None, overrides, cls=TreeGRPOConfig)
trainer = train(cfg)
history = [h for h in trainer.state.log_history if "memory/rss_gb" in h]
print("RESULT " + json.dumps({"history": history, "peak_rss_gb": peak_resident_gb()}))
"""


def run_one(recipe: str, overrides: dict) -> dict:
    """Train in a fresh process with `overrides` on top of `recipe` and return its logged steps and peak RSS."""
    proc = subprocess.run([sys.executable, "-c", CHILD, recipe, json.dumps(overrides)],
                          capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.splitlines()[-20:])
        raise SystemExit(f"run {overrides} failed with exit status {proc.returncode}:\n{tail}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="", help="GRPO recipe (YAML)")
    ap.add_argument("--model_name_or_path", help="SFT model to start from (overrides the recipe)")
    ap.add_argument("--steps", type=int, default=2, help="optimizer steps per setting")
    ap.add_argument("--chunks", type=int, nargs="+", default=[0, 64],
                    help="loss_chunk_rows settings to compare (0: one pass)")
    args = ap.parse_args()

    results = {}
    for chunk in args.chunks:
        with tempfile.TemporaryDirectory() as out:
            overrides = {"max_steps": args.steps, "loss_chunk_rows": chunk, "output_dir": out,
                         "save_every_minutes": 0, "stop_at": None}
            if args.model_name_or_path:
                overrides["model_name_or_path"] = args.model_name_or_path
            results[chunk] = run_one(args.recipe, overrides)
        hist = results[chunk]["history"]
        results[chunk]["median_step"] = statistics.median(float(h["step_time"]) for h in hist)
        print(f"loss_chunk_rows {chunk:>4}: peak RSS {results[chunk]['peak_rss_gb']:6.2f} GiB  "
              f"RSS after rollouts {[round(float(h['memory/rss_gb']), 2) for h in hist]}  "
              f"rows/tree {[round(float(h['tree/rows_per_tree']), 1) for h in hist]}  "
              f"median step {results[chunk]['median_step']:6.1f} s", flush=True)
    base = results[args.chunks[0]]
    for chunk in args.chunks[1:]:
        r = results[chunk]
        step = r["median_step"] / base["median_step"]
        print(f"loss_chunk_rows {chunk} / {args.chunks[0]}: peak RSS x{r['peak_rss_gb'] / base['peak_rss_gb']:.2f}, "
              f"median step time x{step:.2f}")


if __name__ == "__main__":
    main()
