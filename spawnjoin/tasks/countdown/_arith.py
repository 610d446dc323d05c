"""Countdown arithmetic shared by the generator, the solvers and the verifier.

The rules (apr.md): two available numbers combine by ``+``, ``*``, larger-minus-smaller ``-``, or ``/`` when the
larger divides exactly by the smaller. An operation is written ``x op y=z``; for ``+`` and ``*`` the operands keep
their order in the state, for ``-`` and ``/`` the larger comes first.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

OPERATORS = ("+", "-", "*", "/")


def combine(a: int, b: int) -> list[tuple[int, str]]:
    """All results of combining ``a`` and ``b``, each with its written operation, in the solvers' order.

    Args:
        a (int): The number that comes first in the state.
        b (int): The number that comes second in the state.

    Returns:
        list[tuple[int, str]]: ``(result, "x op y=z")`` for ``+``, ``*``, ``-`` and, when exact, ``/``.
    """
    big, small = (a, b) if a >= b else (b, a)
    out = [(a + b, f"{a}+{b}={a + b}"), (a * b, f"{a}*{b}={a * b}"), (big - small, f"{big}-{small}={big - small}")]
    if small and big % small == 0:
        out.append((big // small, f"{big}/{small}={big // small}"))
    return out


def apply(x: int, op: str, y: int) -> int | None:
    """The value of ``x op y`` under the Countdown rules, or ``None`` when the operation is not allowed.

    ``-`` needs ``x >= y`` (no negative numbers); ``/`` needs ``y != 0`` and an exact quotient.

    Args:
        x (int): Left operand as written.
        op (str): One of ``+ - * /``.
        y (int): Right operand as written.

    Returns:
        int | None: The result, or ``None`` for a disallowed operation.
    """
    if op == "+":
        return x + y
    if op == "*":
        return x * y
    if op == "-":
        return x - y if x >= y else None
    if op == "/":
        return x // y if y and x % y == 0 else None
    return None


def _pair_results(a: int, b: int) -> tuple[int, ...]:
    big, small = (a, b) if a >= b else (b, a)
    if small and big % small == 0:
        return (a + b, a * b, big - small, big // small)
    return (a + b, a * b, big - small)


def solvable(numbers: Sequence[int], target: int) -> bool:
    """Whether all ``numbers`` can be combined into exactly ``target``.

    Args:
        numbers (Sequence[int]): The available numbers (all must be used).
        target (int): The goal.

    Returns:
        bool: ``True`` when some sequence of operations leaves ``[target]``.
    """
    n = len(numbers)
    if n == 1:
        return numbers[0] == target
    if n == 2:
        return target in _pair_results(numbers[0], numbers[1])
    if n == 3:  # unrolled: the generator calls this for every candidate problem
        a, b, c = numbers
        return (
            any(target in _pair_results(r, c) for r in _pair_results(a, b))
            or any(target in _pair_results(r, b) for r in _pair_results(a, c))
            or any(target in _pair_results(r, a) for r in _pair_results(b, c))
        )
    for i in range(n - 1):
        for j in range(i + 1, n):
            rest = [numbers[k] for k in range(n) if k != i and k != j]
            for r in _pair_results(numbers[i], numbers[j]):
                if solvable([*rest, r], target):
                    return True
    return False


def find_solution(numbers: Sequence[int], target: int) -> list[str] | None:
    """One sequence of written operations that reaches ``target``, or ``None``.

    Args:
        numbers (Sequence[int]): The available numbers.
        target (int): The goal.

    Returns:
        list[str] | None: Operations such as ``["9-3=6", "4*6=24"]``.
    """
    n = len(numbers)
    if n == 1:
        return [] if numbers[0] == target else None
    for i in range(n - 1):
        for j in range(i + 1, n):
            rest = [numbers[k] for k in range(n) if k != i and k != j]
            for r, op in combine(numbers[i], numbers[j]):
                tail = find_solution([*rest, r], target)
                if tail is not None:
                    return [op, *tail]
    return None


@lru_cache(maxsize=512)
def factor_distance_table(target: int) -> tuple[int, ...]:
    """Distance from each ``n`` in ``0..target`` to the nearest divisor of ``target``.

    Numbers above ``target`` are nearest to ``target`` itself, so callers use ``n - target`` for them.

    Args:
        target (int): A positive target.

    Returns:
        tuple[int, ...]: ``table[n]`` for ``n`` in ``0..target``.
    """
    divisors = [d for d in range(1, target + 1) if target % d == 0] or [0]
    table = []
    k = 0
    for n in range(target + 1):
        while k + 1 < len(divisors) and abs(divisors[k + 1] - n) <= abs(divisors[k] - n):
            k += 1
        table.append(abs(divisors[k] - n))
    return tuple(table)


def factor_heuristic(numbers: Sequence[int], target: int) -> int:
    """Sum over ``numbers`` of the distance to the nearest divisor of ``target`` (lower is more promising).

    Args:
        numbers (Sequence[int]): A state.
        target (int): The goal.

    Returns:
        int: The heuristic value.
    """
    table = factor_distance_table(target)
    return sum(table[n] if n <= target else n - target for n in numbers)
