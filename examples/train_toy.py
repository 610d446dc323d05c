"""The training pipeline end to end, at toy size: data, SFT, then solves through the runtime.

What it shows, in three steps that each use the project's own pieces:

1. Data: `training.data.generate` (the `spawnjoin-train data` command) writes APR demonstrations from the
   symbolic solver: one row per thread call, parent calls and child calls alike (docs/apr-format.md).
2. SFT: `training.sft.train` (the `spawnjoin-train sft` command) trains a tiny Llama built from a config
   (`model_shape="tiny"`: 2 layers, 64 wide; nothing downloaded) with TRL's `SFTTrainer`, and saves an
   inference-ready model directory.
3. Evaluation: that directory goes straight into `EmbeddedBackend(...)`, and a handful of held-out problems
   run through `spawnjoin.solve` - the same runtime, dialect and engine as the shipped model.

At this size (0.09M parameters, a minute of CPU) the loss falls but the model does not yet write valid
searches, let alone spawn: expect no verified answers and one thread per problem. The shipped model's
recipe (`training/recipes/countdown-apr.yaml`, docs/training.md) is the same pipeline with a 5.1M-parameter
model, an arithmetic warm-up and about 4M tokens.

Run it:  python examples/train_toy.py                 (writes runs/train-toy/)
         python examples/train_toy.py --out /tmp/toy --steps 600 --trees 1000

Expected output (numbers vary; the trainer's own log lines are interleaved):

    [1/3] data: 300 trees, 1229 calls -> runs/train-toy/data (2.3 s)
    [2/3] sft: 200 steps, loss 3.54 -> 2.39 (57.0 s) -> runs/train-toy/sft/final
    [3/3] solve: 4 validation problems with EmbeddedBackend(runs/train-toy/sft/final)
    38 40 23 21  answer -  status done  threads 1  spawns 0  tokens 300
    ...
    the first root began:
        Exploring Operation: 12]
    done in 61.9 s

About 65 s on this project's 2-core CPU while another training run shared it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from itertools import islice
from pathlib import Path

import spawnjoin
from spawnjoin import Budget
from spawnjoin.tasks.countdown import iter_split, verify_path
from training.data import DataConfig, generate


def make_data(out: Path, n: int) -> Path:
    """Step 1: APR demonstrations for 3-number problems (short sequences: quick to learn from)."""
    start = time.perf_counter()
    cfg = DataConfig(split="train", n=n, style="apr", numbers=3, out=out, seed=0, trees=False)
    summary = generate(cfg, progress=False)
    print(f"[1/3] data: {summary['trees']} trees, {summary['rows']} calls -> {out} "
          f"({time.perf_counter() - start:.1f} s)", flush=True)
    return out


def sft(data: Path, out: Path, steps: int, threads: int | None) -> Path:
    """Step 2: a few SFT steps on a tiny Llama built from a config; returns the saved model directory."""
    from training.recipe import load_config
    from training.sft import train  # imports torch and TRL

    start = time.perf_counter()
    cfg = load_config(overrides={
        "output_dir": str(out),
        "model_shape": "tiny",  # training/model_configs.py: 2 layers, hidden 64
        "train_files": [str(data)],
        "max_steps": steps,
        "gradient_accumulation_steps": 1,
        "max_length": 1024,  # packed row length = the context window the model is used with
        "learning_rate": 1e-2,  # high, for a 0.09M-parameter model and a few hundred steps
        "warmup_steps": 0.1,
        "logging_steps": max(1, steps // 4),
        "save_every_minutes": 0,  # no checkpoints, only the final model
        "num_threads": threads,
        "disable_tqdm": True,
    })
    final = train(cfg)
    losses = [e["loss"] for e in json.loads((final / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    print(f"[2/3] sft: {steps} steps, loss {losses[0]:.2f} -> {losses[-1]:.2f} "
          f"({time.perf_counter() - start:.1f} s) -> {final}", flush=True)
    return final


async def evaluate(model_dir: Path, n: int, max_total_tokens: int, threads: int | None) -> None:
    """Step 3: held-out problems through the runtime, on the model just trained."""
    from spawnjoin.backends.embedded import EmbeddedBackend

    problems = list(islice(iter_split("validation", numbers=3, seed=0), n))
    prompts = [f"{p.target} {' '.join(map(str, p.numbers))}" for p in problems]
    print(f"[3/3] solve: {n} validation problems with EmbeddedBackend({model_dir})", flush=True)
    budget = Budget(context_window=1024, max_threads=16, max_total_tokens=max_total_tokens)
    async with EmbeddedBackend(model_dir, torch_threads=threads) as backend:
        results = await asyncio.gather(
            *(spawnjoin.solve(p, backend=backend, task="countdown", budget=budget) for p in prompts)
        )
    for problem, prompt, result in zip(problems, prompts, results, strict=True):
        m = result.metrics
        ok = result.answer is not None and verify_path(problem, result.text).ok
        print(f"{prompt:<12} answer {result.answer or '-'}{'  verified' if ok else ''}  status {result.status}  "
              f"threads {m.threads}  spawns {m.spawns}  tokens {m.total_tokens}")
    written = results[0].trace.root.generated.splitlines()[:2]  # what the model wrote after its prompt
    print("the first root began:", *(f"    {line[:100]}" for line in written), sep="\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/train-toy"), help="output directory")
    parser.add_argument("--trees", type=int, default=300, help="demonstration trees to generate")
    parser.add_argument("--steps", type=int, default=200, help="SFT optimizer steps (1024 tokens each)")
    parser.add_argument("--problems", type=int, default=4, help="validation problems to solve")
    parser.add_argument("--max-total-tokens", type=int, default=300, help="token budget per solve")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()

    start = time.perf_counter()
    data = make_data(args.out / "data", args.trees)
    model_dir = sft(data, args.out / "sft", args.steps, args.threads)
    asyncio.run(evaluate(model_dir, args.problems, args.max_total_tokens, args.threads))
    print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
