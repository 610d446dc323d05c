"""Countdown problems: the data type, a seeded generator, fixed splits, prompts and a forgiving parser.

Split membership is a property of the problem itself: a hash of its key (sorted numbers, target) puts it in
``test`` (1 in 100), ``validation`` (1 in 100) or ``train``. Each split draws from its own seeded stream and keeps
only problems whose hash belongs to it, so any process regenerates the same test set and no test problem can ever
appear in training data, whatever the sizes or seeds asked for.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from ._arith import solvable
from .format import budget_prefix, node_prompt

Split = Literal["train", "validation", "test"]
SPLITS: tuple[Split, ...] = ("train", "validation", "test")
NUMBER_RANGE = (1, 99)
TARGET_RANGE = (10, 100)
_BUCKETS = 100


class Problem(BaseModel):
    """A Countdown problem: combine all ``numbers`` into ``target``."""

    numbers: list[int] = Field(min_length=1)
    target: int = Field(ge=0)

    @field_validator("numbers")
    @classmethod
    def _non_negative(cls, value: list[int]) -> list[int]:
        if any(n < 0 for n in value):
            raise ValueError("numbers must be non-negative")
        return value

    @property
    def key(self) -> tuple[tuple[int, ...], int]:
        """De-duplication key: the sorted numbers and the target."""
        return tuple(sorted(self.numbers)), self.target

    @property
    def id(self) -> str:
        """Stable identifier derived from the key, e.g. ``t24-3.4.9``."""
        nums, target = self.key
        return f"t{target}-" + ".".join(map(str, nums))

    def split(self) -> Split:
        """The split this problem belongs to (fixed by a hash of its key)."""
        return split_of(self.key)

    def __str__(self) -> str:
        return f"{self.target}:{self.numbers}"


def split_of(key: tuple[tuple[int, ...], int]) -> Split:
    """Which split a problem key belongs to.

    Args:
        key (tuple[tuple[int, ...], int]): ``(sorted numbers, target)``, as :attr:`Problem.key`.

    Returns:
        Split: ``"test"``, ``"validation"`` or ``"train"``.
    """
    nums, target = key
    digest = hashlib.blake2b(f"{target}:{','.join(map(str, nums))}".encode(), digest_size=8).digest()
    bucket = int.from_bytes(digest, "little") % _BUCKETS
    if bucket == 0:
        return "test"
    if bucket == 1:
        return "validation"
    return "train"


def sample_problem(
    rng: random.Random,
    *,
    numbers: int = 4,
    number_range: tuple[int, int] = NUMBER_RANGE,
    target_range: tuple[int, int] = TARGET_RANGE,
) -> Problem:
    """Draw one solvable problem: numbers uniform in ``number_range``, target uniform in ``target_range``.

    Args:
        rng (random.Random): Source of randomness.
        numbers (int): How many numbers. Defaults to 4.
        number_range (tuple[int, int]): Inclusive range of each number. Defaults to ``(1, 99)``.
        target_range (tuple[int, int]): Inclusive range of the target. Defaults to ``(10, 100)``.

    Returns:
        Problem: A solvable problem (rejection sampling).
    """
    lo, hi = number_range
    tlo, thi = target_range
    while True:
        nums = [rng.randint(lo, hi) for _ in range(numbers)]
        target = rng.randint(tlo, thi)
        if solvable(nums, target):
            return Problem(numbers=nums, target=target)


def iter_split(split: Split, *, numbers: int = 4, seed: int = 0) -> Iterator[Problem]:
    """Endless stream of distinct solvable problems of one split, reproducible from ``(split, numbers, seed)``.

    Args:
        split (Split): ``"train"``, ``"validation"`` or ``"test"``.
        numbers (int): How many numbers per problem (3 or 4 in the reference). Defaults to 4.
        seed (int): Stream seed. Defaults to 0.

    Yields:
        Problem: Problems whose key hashes into ``split``, never repeating a key.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    rng = random.Random(f"countdown/{numbers}/{split}/{seed}")
    lo, hi = NUMBER_RANGE
    tlo, thi = TARGET_RANGE
    seen: set[tuple[tuple[int, ...], int]] = set()
    while True:
        nums = [rng.randint(lo, hi) for _ in range(numbers)]
        target = rng.randint(tlo, thi)
        key = (tuple(sorted(nums)), target)
        if key in seen or split_of(key) != split:
            continue
        seen.add(key)
        if solvable(nums, target):
            yield Problem(numbers=nums, target=target)


def make_split(split: Split, n: int, *, numbers: int = 4, seed: int = 0) -> list[Problem]:
    """The first ``n`` problems of a split's stream (a prefix of any larger request with the same seed).

    Args:
        split (Split): Which split.
        n (int): How many problems.
        numbers (int): How many numbers per problem. Defaults to 4.
        seed (int): Stream seed. Defaults to 0.

    Returns:
        list[Problem]: ``n`` distinct solvable problems.
    """
    stream = iter_split(split, numbers=numbers, seed=seed)
    return [next(stream) for _ in range(n)]


def make_splits(
    n_train: int,
    n_validation: int = 1000,
    n_test: int = 1000,
    *,
    numbers: int = 4,
    seed: int = 0,
) -> dict[Split, list[Problem]]:
    """Train, validation and test problems, pairwise disjoint on (sorted numbers, target).

    Args:
        n_train (int): Training problems.
        n_validation (int): Validation problems. Defaults to 1000.
        n_test (int): Test problems. Defaults to 1000.
        numbers (int): How many numbers per problem. Defaults to 4.
        seed (int): Stream seed shared by the three splits. Defaults to 0.

    Returns:
        dict[Split, list[Problem]]: The three splits.
    """
    sizes: dict[Split, int] = {"train": n_train, "validation": n_validation, "test": n_test}
    return {s: make_split(s, k, numbers=numbers, seed=seed) for s, k in sizes.items()}


def root_prompt(
    problem: Problem, *, sub_call_budget: int | None = None, token_budget: int | None = None
) -> str:
    """The root thread's prompt, e.g. ``Moving to Node #0\\nCurrent State: 24:[4, 9, 3], Operations: []\\n``.

    Args:
        problem (Problem): The problem.
        sub_call_budget (int | None): Optional ``Sub Call Budget: N `` conditioning (APR).
        token_budget (int | None): Optional ``Token Budget: B `` conditioning (SoS+).

    Returns:
        str: The prompt.
    """
    prefix = budget_prefix(sub_call_budget=sub_call_budget, token_budget=token_budget)
    return node_prompt("0", problem.target, problem.numbers, prefix=prefix)


_STATE = re.compile(r"(\d+)\s*:\s*\[\s*(\d+(?:\s*,\s*\d+)*)\s*\]")
_TARGET_WORD = re.compile(r"\b(?:target|make|reach|get)\b\D*?(\d+)", re.IGNORECASE)
_ARROW = re.compile(r"^(.*?)(?:->|=>|=)\s*(\d+)\s*$")
_INT = re.compile(r"\d+")


def parse_problem(text: str) -> Problem:
    """Read a problem written by a human.

    Accepted forms: ``"24 4 9 3"`` (target first), ``"target 24 from 4 9 3"``, ``"24:[4, 9, 3]"`` (also inside a
    ``Current State:`` line) and ``"4 9 3 -> 24"``.

    Args:
        text (str): The description.

    Returns:
        Problem: The parsed problem.

    Raises:
        ValueError: When no target and at least two numbers can be found.
    """
    if m := _STATE.search(text):
        return Problem(target=int(m.group(1)), numbers=[int(x) for x in _INT.findall(m.group(2))])
    if m := _TARGET_WORD.search(text):
        rest = text[: m.start(1)] + " " + text[m.end(1) :]
        nums = [int(x) for x in _INT.findall(rest)]
        if len(nums) >= 2:
            return Problem(target=int(m.group(1)), numbers=nums)
    if m := _ARROW.match(text.strip()):
        nums = [int(x) for x in _INT.findall(m.group(1))]
        if len(nums) >= 2:
            return Problem(target=int(m.group(2)), numbers=nums)
    ints = [int(x) for x in _INT.findall(text)]
    if len(ints) >= 3:
        return Problem(target=ints[0], numbers=ints[1:])
    raise ValueError(f"cannot read a Countdown problem from {text!r}; try '24 4 9 3' or 'target 24 from 4 9 3'")
