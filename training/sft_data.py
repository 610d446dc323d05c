"""The SFT data mix: demonstration rows, the warm-up and reading corpora, tokenization and packing.

Every thread call of a demonstration tree (each parent call, each child call) is one row, `prompt` and
`completion`, as `spawnjoin-train data` writes them (`load_rows`). Three corpora can join them, each aimed at
something a small CPU-trained model learns slowly (shared/reference/cpu-training.md):

* `arithmetic_rows`: lines `x op y=z` taken from the symbolic searches (so operands follow the traces'
  distribution) and written exactly as traces write them, with loss only on `z` and the line end;
* `reading_rows`: a call cut after its first expansion lines, which copy operands from the state;
* `join_rows`: whole calls that continue after a join block.

`tokenize_rows` turns them into `input_ids` and `completion_mask`; `pack_causal_rows` packs calls into rows of
one length that train as plain causal rows.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerFast

__all__ = [
    "arithmetic_rows",
    "ensure_data",
    "join_rows",
    "load_rows",
    "pack_causal_rows",
    "reading_rows",
    "tokenize_rows",
]

_OP_RE = re.compile(r"Exploring Operation: (\d+[-+*/]\d+=)(\d+)")


def ensure_data(commands: list[str]) -> None:
    """Run each `spawnjoin-train data` command whose `--out` directory has no JSONL rows yet."""
    from . import data as data_cmd

    for command in commands:
        argv = shlex.split(command)
        if argv and argv[0] == "data":
            argv = argv[1:]
        out = Path(argv[argv.index("--out") + 1]) if "--out" in argv else None
        if out is not None and any(out.glob("*.jsonl")):
            continue
        parser = argparse.ArgumentParser(prog="spawnjoin-train")
        data_cmd.add_parser(parser.add_subparsers())
        args = parser.parse_args(["data", *argv, "--quiet"])
        data_cmd.run(args)


def _jsonl_files(entry: str) -> list[Path]:
    path = Path(entry)
    if path.is_dir():
        # `spawnjoin-train data` writes {split}.jsonl beside {split}.trees.jsonl; only the former holds rows.
        return sorted(p for p in path.glob("*.jsonl") if not p.name.endswith(".trees.jsonl"))
    if path.exists():
        return [path]
    raise FileNotFoundError(f"training data {entry!r} does not exist; run `spawnjoin-train data ... --out {entry}`")


def load_rows(files: list[str], weights: list[float] | None = None, *, seed: int = 0) -> list[dict[str, str]]:
    """Read `prompt`/`completion` rows from JSONL files or directories, each taking a weighted share.

    Args:
        files (`list[str]`): JSONL files, or directories written by `spawnjoin-train data`.
        weights (`list[float]`, *optional*): Fraction of each entry's rows to use; above 1 repeats rows.
        seed (`int`, *optional*, defaults to `0`): Seed of the sub-sampling.

    Returns:
        `list[dict[str, str]]`: Rows with `prompt` and `completion`.
    """
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    for i, entry in enumerate(files):
        source = []
        for path in _jsonl_files(entry):
            with path.open() as f:
                for line in f:
                    if line.strip():
                        row = json.loads(line)
                        source.append({"prompt": row["prompt"], "completion": row["completion"]})
        weight = 1.0 if weights is None else weights[i]
        whole, frac = divmod(weight, 1.0)
        picked = source * int(whole) + rng.sample(source, int(round(frac * len(source))))
        rows.extend(picked)
    return rows


def arithmetic_rows(n_rows: int, *, lines: int = 64, numbers: tuple[int, ...] = (3, 4), seed: int = 0) -> list[str]:
    """The arithmetic warm-up corpus: rows of `x op y=z` lines from symbolic searches of training problems.

    Operations come from the `Exploring Operation` lines of APR and SoS+ searches over training-split problems,
    so operand sizes follow what traces contain (inputs up to 99, intermediate results, exact divisions only).

    Args:
        n_rows (`int`): Rows to make.
        lines (`int`, *optional*, defaults to `64`): Operation lines per row.
        numbers (`tuple[int, ...]`, *optional*, defaults to `(3, 4)`): Problem sizes to draw searches from.
        seed (`int`, *optional*, defaults to `0`): Seed.

    Returns:
        `list[str]`: Rows, each `lines` lines of `x op y=z\\n`.
    """
    from spawnjoin.tasks.countdown import apr, iter_split, sos_plus

    rng = random.Random(seed)
    needed = n_rows * lines
    ops: list[str] = []
    streams = [iter_split("train", numbers=k, seed=seed + 7919 * k) for k in numbers]
    while len(ops) < needed:
        problem = next(streams[len(ops) % len(streams)])
        solver = apr if rng.random() < 0.5 else sos_plus
        tree = solver(problem, beam_size=rng.randint(1, 5), rng=rng)
        for thread in tree.threads():
            for call in thread.calls:
                ops.extend(a + b for a, b in _OP_RE.findall(call.target))
    rng.shuffle(ops)
    return ["".join(op + "\n" for op in ops[i * lines : (i + 1) * lines]) for i in range(n_rows)]


_EXPANSION_LINE = ("Exploring Operation: ", "Generated Node #")


def _repeat_sample(eligible: list[dict[str, str]], n_rows: int, seed: int) -> list[dict[str, str]]:
    """`n_rows` of `eligible`: every one as many whole times as fit, the rest sampled without repetition."""
    whole, rest = divmod(n_rows, len(eligible)) if eligible else (0, 0)
    return eligible * whole + random.Random(seed).sample(eligible, rest)


def reading_rows(rows: list[dict[str, str]], n_rows: int, *, min_numbers: int = 3, seed: int = 0) -> list[dict[str, str]]:
    """The state-reading corpus: a node's prompt and only the expansion lines that read its state.

    A thread's first call opens with `Current State: T:[a, b, c], ...` in its prompt and writes `Exploring
    Operation` / `Generated Node` lines whose operands and remaining numbers must be copied from that state. A row
    here keeps the prompt and that leading run of lines and nothing after it (no spawn block, no `<eos>`: the
    sequence is cut, not ended), so the copying gets several times more of the loss per token than whole calls give
    it. Only states of at least `min_numbers` numbers are used (two-number states are read reliably already).

    Args:
        rows (`list[dict[str, str]]`): `prompt`/`completion` rows (thread calls) to cut from.
        n_rows (`int`): Rows to make (sampled with repetition when fewer eligible calls exist).
        min_numbers (`int`, *optional*, defaults to `3`): Smallest state size to use.
        seed (`int`, *optional*, defaults to `0`): Seed of the sampling.

    Returns:
        `list[dict[str, str]]`: Rows with `prompt` (the node prompt) and `completion` (the expansion lines).
    """
    from spawnjoin.tasks.countdown.verify import STATE_RE

    eligible = []
    for row in rows:
        state = STATE_RE.fullmatch(row["prompt"].rstrip("\n").rpartition("\n")[2])  # the prompt's last line
        if state is None or len(state.group(2).split(", ")) < min_numbers:
            continue
        kept = []
        for line in row["completion"].splitlines(keepends=True):
            if not line.startswith(_EXPANSION_LINE) or not line.endswith("\n"):
                break
            kept.append(line)
        if kept:
            eligible.append({"prompt": row["prompt"], "completion": "".join(kept)})
    if n_rows and not eligible:
        raise ValueError(f"no call opens on a state of {min_numbers}+ numbers with expansion lines to read it")
    return _repeat_sample(eligible, n_rows, seed)


def join_rows(rows: list[dict[str, str]], n_rows: int, *, seed: int = 0) -> list[dict[str, str]]:
    """The join-reading corpus: whole calls that continue after a join in which a sub search reached the goal.

    After `<End Sub Searches>` a parent must rewrite the winning sub search's path as its own (its node's
    operation, then each line of the child's), copying operations and numbers out of the join. Held out, the
    stage-6 model lost 99 of 500 4-number problems there: a thread reached the goal and the root's path did not
    verify. These rows repeat exactly those calls (prompt with the join, completion and `<eos>`, as in
    `train_files`), so that copy gets more of the loss than its share of the calls gives it.

    Args:
        rows (`list[dict[str, str]]`): `prompt`/`completion` rows (thread calls) to choose from.
        n_rows (`int`): Rows to make (sampled with repetition when fewer eligible calls exist).
        seed (`int`, *optional*, defaults to `0`): Seed of the sampling.

    Returns:
        `list[dict[str, str]]`: The chosen calls, unchanged.

    Raises:
        ValueError: If `n_rows > 0` and no call continues after a join that reached the goal.
    """
    eligible = [r for r in rows if "<End Sub Searches>" in r["prompt"]
                and "<Goal Reached in Sub Search" in r["prompt"].rpartition("<Sub Searches>")[2]]
    if n_rows and not eligible:
        raise ValueError("no call continues after a join in which a sub search reached the goal")
    return _repeat_sample(eligible, n_rows, seed)


def _result_mask(tokens: list[str]) -> list[int]:
    """1 on the tokens of each result and its line end (after `=` up to and including the newline)."""
    mask, inside = [], False
    for tok in tokens:
        mask.append(1 if inside else 0)
        if tok == "=":
            inside = True
        elif tok.endswith("\n"):
            inside = False
    return mask


def tokenize_rows(
    rows: list[dict[str, str]],
    arithmetic: list[str],
    tokenizer: PreTrainedTokenizerFast,
    *,
    reading: list[dict[str, str]] | None = None,
    seed: int = 0,
) -> Dataset:
    """Tokenize calls and warm-up rows into a shuffled dataset with `input_ids` and `completion_mask`.

    Args:
        rows (`list[dict[str, str]]`): `prompt`/`completion` rows; a sequence is `<bos> prompt completion <eos>`
            with mask 1 on the completion and `<eos>`.
        arithmetic (`list[str]`): Warm-up rows; mask 1 on each result and its line end.
        tokenizer (`PreTrainedTokenizerFast`): The tokenizer (it prepends `<bos>`).
        reading (`list[dict[str, str]]`, *optional*): State-reading rows (`reading_rows`): `<bos> prompt
            completion` with mask 1 on the completion and no `<eos>` (the call goes on after them).
        seed (`int`, *optional*, defaults to `0`): Shuffle seed.

    Returns:
        `Dataset`: Columns `input_ids` and `completion_mask`.
    """
    from datasets import Dataset

    ids: list[list[int]] = []
    masks: list[list[int]] = []
    # Calls end with <eos>; state-reading rows are cut calls and end without one. Loss on completion (+ <eos>).
    for batch, end in ((rows, [tokenizer.eos_token_id]), (reading or [], [])):
        if not batch:
            continue
        prompts = tokenizer([r["prompt"] for r in batch])["input_ids"]
        completions = tokenizer([r["completion"] for r in batch], add_special_tokens=False)["input_ids"]
        for p, c in zip(prompts, completions, strict=True):
            ids.append(p + c + end)
            masks.append([0] * len(p) + [1] * (len(c) + len(end)))
    if arithmetic:
        encoded = tokenizer(arithmetic)["input_ids"]
        for seq in encoded:
            ids.append(seq)
            masks.append(_result_mask(cast("list[str]", tokenizer.convert_ids_to_tokens(seq))))  # a list in
    order = list(range(len(ids)))
    random.Random(seed).shuffle(order)
    return Dataset.from_dict({"input_ids": [ids[i] for i in order], "completion_mask": [masks[i] for i in order]})


def pack_causal_rows(dataset: Dataset, max_length: int, pad_token_id: int) -> Dataset:
    """Pack calls best-fit-decreasing into rows of exactly `max_length` tokens that train as plain causal rows.

    TRL packs padding-free: a batch becomes one flattened sequence, so more than one row per micro-batch would
    make a causal row `batch * max_length` long. Packing here instead, and training with `packing=False`, gives
    the collator whole rows for a `[batch, max_length]` tensor with positions `0..n-1` per row. Each row is filled
    up with `pad_token_id` (no loss, and nothing after it reads it), so the batch needs no padding mask and SDPA
    keeps its fused causal kernel.

    Args:
        dataset (`Dataset`): Columns `input_ids` and `completion_mask`, one call per row.
        max_length (`int`): Row length; a longer call is truncated, as TRL's `bfd` strategy does.
        pad_token_id (`int`): Filler token.

    Returns:
        `Dataset`: Columns `input_ids` and `completion_mask`, several calls per row, every row `max_length` long.
    """
    from trl.data_utils import pack_dataset

    packed = pack_dataset(dataset, max_length, strategy="bfd")
    packed = packed.remove_columns([c for c in packed.column_names if c not in ("input_ids", "completion_mask")])

    def fill(batch: dict[str, list[list[int]]]) -> dict[str, list[list[int]]]:
        ids = [row + [pad_token_id] * (max_length - len(row)) for row in batch["input_ids"]]
        masks = [row + [0] * (max_length - len(row)) for row in batch["completion_mask"]]
        return {"input_ids": ids, "completion_mask": masks}

    return packed.map(fill, batched=True)
