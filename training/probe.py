"""`spawnjoin-train probe`: two quick probes of a Countdown APR model's root thread, without the runtime.

They measure, on held-out problems, the two root decisions that the evaluation reports only as outcomes:

* **first step**: greedy decoding of the root prompt up to its first `Exploring Operation` line; does that line
  take both operands from the prompt's `Current State`? (The report's `first_step_operands_available` measures the
  same thing through the runtime; the probe runs in seconds and also tries the state in a child's prompt.)
* **spawn decision**: the symbolic solver's own expansion lines for the root (so the model's reading errors do not
  enter), then the model's probability of opening a spawn block (`<Calling Sub Searches>`) against moving on to a
  node in the same thread (`Moving to Node #`). In the APR demonstrations the root spawns after such lines.

Run `spawnjoin-train probe runs/countdown-apr-stage6/final --numbers 3 --n 100`.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from transformers import GenerationMixin, PreTrainedModel, PreTrainedTokenizerFast

    from spawnjoin.tasks.countdown import Split

MOVE = "Moving to Node #"


def _sequence_logprob(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, context: str,
                      continuation: str) -> float:
    """log P(continuation | context) under the model, summed over the continuation's tokens."""
    import torch

    ctx = tokenizer(context).input_ids
    ids = ctx + tokenizer(continuation, add_special_tokens=False).input_ids
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
    return sum(float(logits[i - 1, ids[i]]) for i in range(len(ctx), len(ids)))


def _first_line(model: GenerationMixin, tokenizer: PreTrainedTokenizerFast, prompt: str) -> str:
    """Greedy continuation of `prompt` up to the end of its first `Exploring Operation` line."""
    import torch

    ids = tokenizer(prompt).input_ids
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=48, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    text = cast(str, tokenizer.decode(out[0, len(ids):], skip_special_tokens=True))  # one sequence in
    start = text.find("Exploring Operation: ")
    if start < 0:
        return ""
    end = text.find("\n", start)
    return text if end < 0 else text[: end + 1]


def _reads_state(prompt: str, line: str) -> bool | None:
    from .evaluate import _first_step_reads_state

    return _first_step_reads_state(prompt + line)


def child_prompt(root: str) -> str:
    """The root prompt's state as a child thread would see it (`Node #0,0`, one operation already done)."""
    return root.replace("Moving to Node #0\n", "Moving to Node #0,0\n").replace("Operations: []", "Operations: ['1+1=2']")


def probe(model_path: str, *, numbers: int = 3, n: int = 100, split: Split = "test", seed: int = 0,
          beam: int = 5, torch_threads: int | None = None) -> dict[str, Any]:
    """Run both probes on the first `n` problems of a held-out split.

    Args:
        model_path (`str`): A local Hugging Face model directory with its tokenizer.
        numbers (`int`, *optional*, defaults to `3`): Numbers per problem.
        n (`int`, *optional*, defaults to `100`): Problems.
        split (`str`, *optional*, defaults to `"test"`): `"test"` or `"validation"`.
        seed (`int`, *optional*, defaults to `0`): Seed of the split's problem stream and of the solver.
        beam (`int`, *optional*, defaults to `5`): Beam of the solver whose expansion lines the spawn probe reads.
        torch_threads (`int`, *optional*): `torch.set_num_threads`.

    Returns:
        `dict`: Shares and probabilities, JSON-ready.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spawnjoin.tasks.countdown import apr, make_split, root_prompt
    from spawnjoin.tasks.countdown.format import SPAWN_OPEN

    if split not in ("test", "validation"):
        raise ValueError("probe on 'test' or 'validation'; the train split is what models were trained on")
    if torch_threads:
        torch.set_num_threads(torch_threads)
    tokenizer = cast("PreTrainedTokenizerFast", AutoTokenizer.from_pretrained(model_path))  # a fast tokenizer
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    root_ok, child_ok, p_spawn, spawned = [], [], [], []
    for i, problem in enumerate(make_split(split, n, numbers=numbers, seed=seed)):
        prompt = root_prompt(problem)
        root_ok.append(_reads_state(prompt, _first_line(model, tokenizer, prompt)))
        child = child_prompt(prompt)
        child_ok.append(_reads_state(child, _first_line(model, tokenizer, child)))
        call = apr(problem, beam_size=beam, sub_call_beam_size=beam, spawn_prob=1.0, seed=seed + i).root.calls[0]
        if SPAWN_OPEN not in call.target:
            continue  # fewer than two nodes to spawn
        lines = call.target[: call.target.index(SPAWN_OPEN)]
        spawn = math.exp(_sequence_logprob(model, tokenizer, call.context + lines, SPAWN_OPEN))
        move = math.exp(_sequence_logprob(model, tokenizer, call.context + lines, MOVE))
        p_spawn.append(spawn)
        spawned.append(spawn > move)

    def share(flags: Sequence[bool | None]) -> float:
        return round(sum(1 for f in flags if f) / len(flags), 3) if flags else 0.0

    return {
        "model": model_path, "numbers": numbers, "n": n, "split": split, "seed": seed, "beam": beam,
        "first_step_reads_state": {"root": share(root_ok), "child_prompt": share(child_ok)},
        "spawn_after_solver_lines": {
            "problems": len(p_spawn),
            "p_spawn_median": round(statistics.median(p_spawn), 4) if p_spawn else 0.0,
            "p_spawn_mean": round(statistics.fmean(p_spawn), 4) if p_spawn else 0.0,
            "spawn_more_likely_than_move": share(spawned),
        },
    }


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``probe`` subcommand.

    Args:
        subparsers (argparse._SubParsersAction): The CLI's subparsers.

    Returns:
        argparse.ArgumentParser: The new subparser.
    """
    p = subparsers.add_parser("probe", help="probe a model's root: first-step state reading, spawn decision")
    p.add_argument("model", help="local Hugging Face model directory")
    p.add_argument("--numbers", type=int, default=3, choices=(3, 4))
    p.add_argument("--n", type=int, default=100, help="held-out problems")
    p.add_argument("--split", default="test", choices=("test", "validation"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--beam", type=int, default=5, help="beam of the solver lines the spawn probe reads")
    p.add_argument("--torch-threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``spawnjoin-train probe`` with parsed arguments.

    Args:
        args (argparse.Namespace): Parsed arguments.

    Returns:
        int: Exit status.
    """
    report = probe(args.model, numbers=args.numbers, n=args.n, split=args.split, seed=args.seed, beam=args.beam,
                   torch_threads=args.torch_threads)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0
