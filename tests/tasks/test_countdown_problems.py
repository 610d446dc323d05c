import os
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from spawnjoin.tasks.countdown import (
    Problem,
    find_solution,
    iter_split,
    make_split,
    make_splits,
    parse_problem,
    root_prompt,
    solvable,
    split_of,
)
from spawnjoin.tasks.countdown._arith import apply, factor_heuristic


def replay(numbers: list[int], ops: list[str]) -> list[int]:
    """Independent replay of written operations (kept naive on purpose)."""
    pool = list(numbers)
    for op in ops:
        lhs, z = op.split("=")
        sym = next(c for c in "+-*/" if c in lhs)
        x, y = (int(v) for v in lhs.split(sym))
        pool.remove(x)
        pool.remove(y)
        assert apply(x, sym, y) == int(z)
        pool.append(int(z))
    return pool


def test_root_prompt_is_exact():
    p = Problem(numbers=[4, 9, 3], target=24)
    assert root_prompt(p) == "Moving to Node #0\nCurrent State: 24:[4, 9, 3], Operations: []\n"
    assert root_prompt(p, sub_call_budget=5) == (
        "Sub Call Budget: 5 Moving to Node #0\nCurrent State: 24:[4, 9, 3], Operations: []\n"
    )
    assert root_prompt(p, token_budget=1024).startswith("Token Budget: 1024 Moving to Node #0\n")


def test_problem_validation_and_identity():
    with pytest.raises(ValidationError):
        Problem(numbers=[4, -1], target=3)
    with pytest.raises(ValidationError):
        Problem(numbers=[], target=3)
    a = Problem(numbers=[9, 4, 3], target=24)
    b = Problem(numbers=[3, 9, 4], target=24)
    assert a.key == b.key == ((3, 4, 9), 24)
    assert a.id == b.id == "t24-3.4.9"
    assert str(a) == "24:[9, 4, 3]"


def test_solvable_known_cases():
    assert solvable([4, 9, 3], 24)
    assert solvable([5, 4, 44, 14], 10)
    assert not solvable([1, 1, 1], 100)
    assert not solvable([2, 2], 5)
    assert solvable([7, 7], 1)  # exact division of equal numbers
    assert not solvable([7, 2], 3)  # 7/2 is not exact, and there are no negatives: 2-7 is not allowed


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), numbers=st.sampled_from([3, 4]))
def test_generated_problems_follow_the_reference_distribution(seed, numbers):
    for p in make_split("train", 20, numbers=numbers, seed=seed):
        assert len(p.numbers) == numbers
        assert all(1 <= n <= 99 for n in p.numbers)
        assert 10 <= p.target <= 100
        ops = find_solution(p.numbers, p.target)
        assert ops is not None
        assert replay(p.numbers, ops) == [p.target]


def test_distribution_covers_the_ranges():
    problems = make_split("train", 3000, numbers=4, seed=1)
    nums = Counter(n for p in problems for n in p.numbers)
    targets = Counter(p.target for p in problems)
    assert min(nums) == 1 and max(nums) == 99
    assert min(targets) == 10 and max(targets) == 100
    assert len(targets) == 91
    mean = sum(n * c for n, c in nums.items()) / sum(nums.values())
    assert 45 < mean < 55  # uniform over 1..99 (solvability filters only a few)


def test_splits_are_disjoint_deduplicated_and_hash_assigned():
    splits = make_splits(3000, 200, 200, numbers=4, seed=0)
    keys = {name: [p.key for p in probs] for name, probs in splits.items()}
    for name, ks in keys.items():
        assert len(ks) == len(set(ks)), f"duplicates in {name}"
        assert all(split_of(k) == name for k in ks)
    assert not set(keys["train"]) & set(keys["test"])
    assert not set(keys["train"]) & set(keys["validation"])
    assert not set(keys["validation"]) & set(keys["test"])


def test_test_split_never_overlaps_any_training_seed():
    test_keys = {p.key for p in make_split("test", 100, numbers=3)}
    for seed in range(3):
        train = make_split("train", 1500, numbers=3, seed=seed)
        assert not test_keys & {p.key for p in train}
        assert all(p.split() == "train" for p in train)


def test_splits_are_reproducible_prefixes():
    assert make_split("test", 50) == make_split("test", 100)[:50]
    assert make_split("train", 30, seed=1) != make_split("train", 30, seed=2)
    stream = iter_split("validation", numbers=3)
    assert [next(stream) for _ in range(10)] == make_split("validation", 10, numbers=3)
    with pytest.raises(ValueError):
        next(iter_split("dev"))  # type: ignore[arg-type]


def test_test_split_is_identical_in_another_process():
    code = (
        "from spawnjoin.tasks.countdown import make_split;"
        "print([p.id for p in make_split('test', 40)])"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == str([p.id for p in make_split("test", 40)])


@pytest.mark.parametrize(
    "text",
    [
        "24 4 9 3",
        "target 24 from 4 9 3",
        "Target: 24, numbers 4, 9, 3",
        "24:[4, 9, 3]",
        "Current State: 24:[4, 9, 3], Operations: []",
        "4 9 3 -> 24",
        "make 24 with 4, 9 and 3",
    ],
)
def test_parse_problem_accepts_human_forms(text):
    assert parse_problem(text) == Problem(numbers=[4, 9, 3], target=24)


@pytest.mark.parametrize("text", ["", "hello", "24", "24 4"])
def test_parse_problem_rejects_too_little(text):
    with pytest.raises(ValueError):
        parse_problem(text)


def test_factor_heuristic():
    # divisors of 24: 1 2 3 4 6 8 12 24 -> 5 is 1 away, 10 is 2 away, 30 is 6 away, 0 is 1 away
    assert factor_heuristic([5, 10, 30, 0], 24) == 1 + 2 + 6 + 1
    assert factor_heuristic([24, 12, 1], 24) == 0
