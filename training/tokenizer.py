"""A small word-level tokenizer for Countdown traces, built locally with the ``tokenizers`` library.

Pieces, tried longest first: the trace's keyword phrases (``Exploring Operation: ``, ``, Resulting Numbers: [``,
``<End Sub Searches>`` ...), then single digits (numbers are spelled one digit per token), then any single character
of ``string.printable`` (ASCII letters, punctuation and whitespace). Every piece is a vocabulary entry and the decoder concatenates pieces, so
``decode(encode(text, add_special_tokens=False)) == text`` for any ASCII text. ``encode`` prepends ``<bos>`` as
Llama tokenizers do (``decode(..., skip_special_tokens=True)`` drops it); TRL appends ``<eos>`` to completions.

Run ``python -m training.tokenizer save DIR`` to write ``tokenizer.json`` and ``tokenizer_config.json``, and
``python -m training.tokenizer lengths`` to print sequence lengths of solver output.
"""

from __future__ import annotations

import argparse
import random
import statistics
import string
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")

# Phrases of the trace format that become single tokens. Order does not matter: they are matched longest first.
PHRASES = (
    "Moving to Node #",
    "Current State: ",
    "], Operations: []\n",
    "], Operations: ['",
    "', '",
    "']\n",
    "Exploring Operation: ",
    ", Resulting Numbers: [",
    "Generated Node #",
    "] Operation: ",
    " equal: Goal Reached\n",
    " unequal: No Solution\n",
    "Goal Reached",
    "No Solution",
    "No solution found.\n",
    "No solution found in sub search\n",
    "Start Sub Search at level ",
    "Exit Sub Search at level ",
    "<Calling Sub Searches>\n",
    "<End Calling Sub Searches>\n",
    "<Start Sub Search ",
    " at level ",
    "> Moving to Node #",
    "<Sub Searches>\n",
    "<End Sub Searches>\n",
    "<No Solution in Sub Search ",
    "<Goal Reached in Sub Search ",
    " at Node #",
    ">\n",
    "Sub Call Budget: ",
    "Token Budget: ",
    ": Moving to Node #",
    ":[",
    "]\n",
    ", ",
    ": ",
)

_SINGLES = list(string.printable)


def _onig_escape(text: str) -> str:
    return "".join("\\" + c if c in r".^$*+?()[]{}|\/-#<>" else ("\\n" if c == "\n" else c) for c in text)


def vocabulary() -> list[str]:
    """Every token, in id order: special tokens, phrases (longest first), digits, single characters."""
    phrases = sorted(set(PHRASES), key=lambda p: (-len(p), p))
    vocab = list(SPECIAL_TOKENS) + phrases
    vocab += [c for c in _SINGLES if c not in vocab]
    return vocab


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Build the Countdown tokenizer.

    Returns:
        PreTrainedTokenizerFast: Word-level tokenizer with ``<bos>``, ``<eos>``, ``<pad>``, ``<unk>``.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = vocabulary()
    ids = {tok: i for i, tok in enumerate(vocab)}
    phrases = sorted(set(PHRASES), key=lambda p: (-len(p), p))
    pattern = "|".join(_onig_escape(p) for p in phrases) + r"|[\s\S]"
    tok = Tokenizer(models.WordLevel(vocab=ids, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", ids["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
        model_max_length=16384,
    )


def save_tokenizer(directory: str | Path) -> PreTrainedTokenizerFast:
    """Build the tokenizer and save it with ``save_pretrained`` (``tokenizer.json`` + ``tokenizer_config.json``).

    Args:
        directory (str | Path): Output directory (created if missing).

    Returns:
        PreTrainedTokenizerFast: The saved tokenizer.
    """
    tok = build_tokenizer()
    Path(directory).mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(directory))
    return tok


def length_table(
    n: int = 300, *, beam: tuple[int, int] = (1, 5), sub_beam: tuple[int, int] = (1, 5), seed: int = 0
) -> list[dict[str, float | int | str]]:
    """Token lengths (``<bos>`` + context + target + ``<eos>``) of solver calls, by numbers and sequence kind.

    Args:
        n (int): Problems per row. Defaults to 300.
        beam (tuple[int, int]): Inclusive range the root beam is drawn from. Defaults to ``(1, 5)``.
        sub_beam (tuple[int, int]): Inclusive range of the child beam, raised to at least the root beam.
            Defaults to ``(1, 5)`` (the ``spawnjoin-train data`` defaults).
        seed (int): Seed. Defaults to 0.

    Returns:
        list[dict]: Rows with ``numbers``, ``kind`` (parent / child / sos), ``count``, ``mean``, ``p95``, ``max``.
    """
    from spawnjoin.tasks.countdown import apr, make_split, sos_plus

    tok = build_tokenizer()
    rows: list[dict[str, float | int | str]] = []
    for numbers in (3, 4):
        rng = random.Random(seed)
        lengths: dict[str, list[int]] = {"parent": [], "child": [], "sos": []}
        for problem in make_split("validation", n, numbers=numbers, seed=seed):
            b = rng.randint(*beam)
            sb = rng.randint(max(b, sub_beam[0]), max(b, sub_beam[1]))
            trees = [apr(problem, beam_size=b, sub_call_beam_size=sb, rng=rng), sos_plus(problem, beam_size=b, rng=rng)]
            for tree in trees:
                for thread, _, call in tree.calls():
                    kind: str = "sos" if tree.style == "sos" else thread.role
                    lengths[kind].append(len(tok(call.text)["input_ids"]) + 1)
        for kind, values in lengths.items():
            values.sort()
            rows.append({
                "numbers": numbers, "kind": kind, "count": len(values), "mean": round(statistics.fmean(values), 1),
                "p95": values[int(0.95 * (len(values) - 1))], "max": values[-1],
            })
    return rows


def print_length_table(**kwargs: object) -> None:
    """Print :func:`length_table` as a markdown table (keyword arguments are passed on)."""
    rows = length_table(**kwargs)  # type: ignore[arg-type]
    print("| numbers | sequence | count | mean | p95 | max |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['numbers']} | {r['kind']} | {r['count']} | {r['mean']} | {r['p95']} | {r['max']} |")


def main(argv: list[str] | None = None) -> None:
    """``python -m training.tokenizer save DIR`` or ``python -m training.tokenizer lengths [--n N]``."""
    parser = argparse.ArgumentParser(prog="python -m training.tokenizer")
    sub = parser.add_subparsers(dest="command", required=True)
    save = sub.add_parser("save", help="write tokenizer.json and tokenizer_config.json")
    save.add_argument("out")
    lengths = sub.add_parser("lengths", help="print token lengths of solver output")
    lengths.add_argument("--n", type=int, default=300)
    lengths.add_argument("--beam", type=int, nargs=2, default=(1, 5), metavar=("MIN", "MAX"))
    lengths.add_argument("--sub-beam", type=int, nargs=2, default=(1, 5), metavar=("MIN", "MAX"))
    args = parser.parse_args(argv)
    if args.command == "save":
        tok = save_tokenizer(args.out)
        print(f"saved {len(tok)} tokens to {args.out}")
    else:
        print_length_table(n=args.n, beam=tuple(args.beam), sub_beam=tuple(args.sub_beam))


if __name__ == "__main__":
    main()
