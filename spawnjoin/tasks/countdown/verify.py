"""Verification of Countdown traces: the final path of a root thread, expressions, and step-level statistics.

:func:`verify_path` checks the path a root thread writes last (after its last ``<End Sub Searches>``, or in the
whole text). Under the ``node`` rule (the default) the path may start at any node: the ``Operations`` list of its
first ``Current State`` is replayed from the problem's numbers, then every line after it. Under the ``root`` rule
(the reference's) it must start at ``Moving to Node #0`` and every line is replayed. Either way every operation of
the answer is checked, so a model cannot pass by copying a child's ``Goal Reached`` claim above a path whose
arithmetic is wrong.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, Field

from ._arith import OPERATORS, apply, solvable
from .format import format_operations
from .problems import Problem

_NUMS = r"\[((?:\d+(?:, \d+)*)?)\]"
_OP = r"(\d+)([-+*/])(\d+)=(\d+)"
MOVE_RE = re.compile(r"(?:Sub Call Budget: \d+ |Token Budget: \d+ )*Moving to Node #(\d+(?:,\d+)*)")
STATE_RE = re.compile(rf"Current State: (\d+):{_NUMS}, Operations: (\[.*\])")
EXPLORE_RE = re.compile(rf"Exploring Operation: {_OP}, Resulting Numbers: {_NUMS}")
GENERATED_RE = re.compile(rf"Generated Node #(\d+(?:,\d+)*): (\d+):{_NUMS} Operation: {_OP}")
GOAL_RE = re.compile(r"(\d+),(\d+) equal: Goal Reached")
_EXIT_RE = re.compile(r"Exit Sub Search at level \d+")
_END_JOIN = "<End Sub Searches>\n"
_LISTED_OP_RE = re.compile(r"'([^']*)'")

PathRule = Literal["node", "root"]
"""Where a final path may start: any node whose ``Operations`` list replays (``node``), or ``Node #0`` (``root``)."""


class Verdict(BaseModel):
    """Outcome of verifying a root thread's final path."""

    ok: bool
    reason: str = Field(description="'ok', or what failed and on which line of the path.")
    operations: list[str] = Field(default_factory=list, description="Operations of the path, in order.")
    expression: str | None = Field(default=None, description="Arithmetic expression equal to the target.")


def _nums(group: str) -> list[int]:
    return [int(x) for x in group.split(", ")] if group else []


def _final_path_lines(text: str, rule: PathRule = "root") -> list[str] | str:
    """Lines of the final path, or a reason why there is none."""
    cut = text.rfind(_END_JOIN)
    region = text[cut + len(_END_JOIN) :] if cut >= 0 else text
    lines = region.split("\n")
    while lines and (not lines[-1].strip() or _EXIT_RE.fullmatch(lines[-1].strip())):
        lines.pop()
    if not lines or not GOAL_RE.fullmatch(lines[-1]):
        return "the text does not end with a 'Goal Reached' line"
    if rule == "node":  # the path written after the previous goal line (or the region), from its first node
        first = next((i + 1 for i in range(len(lines) - 2, -1, -1) if GOAL_RE.fullmatch(lines[i])), 0)
        start = next((i for i in range(first, len(lines)) if MOVE_RE.fullmatch(lines[i])), None)
        if start is None:
            return "no 'Moving to Node #...' line before the final 'Goal Reached'"
        return lines[start:]
    for i in range(len(lines) - 1, -1, -1):
        m = MOVE_RE.fullmatch(lines[i])
        if m and m.group(1) == "0":
            return lines[i:]
    return "no path from the root ('Moving to Node #0') before the final 'Goal Reached'"


def _apply_step(state: list[int], x: int, op: str, y: int, z: int) -> list[int] | str:
    """The numbers after ``x op y = z`` from ``state`` (sorted), or why the step is not allowed."""
    rest = Counter(state)
    rest.subtract([x, y])
    if min(rest.values(), default=0) < 0:
        return f"{x}{op}{y}={z}: operands {x} and {y} are not both available in {state}"
    if apply(x, op, y) != z:
        return f"{x}{op}{y}={z} is wrong"
    rest[z] += 1
    return sorted(rest.elements())


def _replay_listed(problem: Problem, operations: str) -> tuple[list[int], list[str]] | str:
    """Replay a ``Current State`` line's ``Operations`` list from the problem's numbers, or say why it fails."""
    state = list(problem.numbers)
    ops: list[str] = []
    for text in _LISTED_OP_RE.findall(operations):
        m = re.fullmatch(_OP, text)
        if not m:
            return f"malformed operation {text!r} in the state's operations"
        x, op, y, z = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
        after = _apply_step(state, x, op, y, z)
        if isinstance(after, str):
            return f"listed operation {after}"
        state = after
        ops.append(text)
    return state, ops


def verify_path(problem: Problem, text: str, *, rule: PathRule = "node") -> Verdict:
    """Verify the final path of a root thread's text.

    Under the ``node`` rule the path is what follows the previous ``Goal Reached`` line (or the whole region when
    there is none), from its first ``Moving to Node`` line to the final ``... equal: Goal Reached`` line, so no
    line of what the thread wrote as its answer is skipped; the ``Operations`` list of its ``Current State`` must replay from the problem's numbers
    (each operation well formed, its operands available, its arithmetic exact) to that state's numbers. Under the
    ``root`` rule (the reference's) the block starts at the last ``Moving to Node #0`` line and the replay starts
    from no operations. Both search after the last ``<End Sub Searches>`` if there is one; a path that passes
    ``root`` passes ``node``. Each node must show ``Moving to Node``,
    the replayed ``Current State`` (target, numbers as a multiset, operations so far) and an ``Exploring
    Operation`` whose operands are available, whose arithmetic is exact and whose resulting numbers are right;
    an optional ``Generated Node`` line must agree and name the next node. The goal line must follow a state of
    exactly ``[target]``. Trailing ``Exit Sub Search`` lines (SoS+) and blank lines are ignored.

    Args:
        problem (Problem): The problem the text claims to solve.
        text (str): The root thread's text (with or without its prompt and join blocks).
        rule (PathRule): ``"node"`` (default) or ``"root"``.

    Returns:
        Verdict: ``ok`` and the operations and expression of the path, or the first failure.
    """
    if rule not in ("node", "root"):
        raise ValueError(f"rule must be 'node' or 'root', not {rule!r}")
    lines = _final_path_lines(text, rule)
    if isinstance(lines, str):
        return Verdict(ok=False, reason=lines)
    t = problem.target
    state = list(problem.numbers)
    ops: list[str] = []
    i = 0
    expected_node = MOVE_RE.fullmatch(lines[0]).group(1)  # type: ignore[union-attr]
    if rule == "node" and len(lines) > 1 and (first := STATE_RE.fullmatch(lines[1])):
        replayed = _replay_listed(problem, first.group(3))
        if isinstance(replayed, str):
            return Verdict(ok=False, reason=f"path line 2: {replayed}")
        state, ops = replayed

    def fail(why: str) -> Verdict:
        return Verdict(ok=False, reason=f"path line {i + 1}: {why}", operations=ops)

    while True:
        m = MOVE_RE.fullmatch(lines[i]) if i < len(lines) else None
        if not m:
            return fail("expected 'Moving to Node #...'")
        if m.group(1) != expected_node:
            return fail(f"moved to node #{m.group(1)}, expected #{expected_node}")
        i += 1
        m = STATE_RE.fullmatch(lines[i]) if i < len(lines) else None
        if not m:
            return fail("expected 'Current State: ...'")
        if int(m.group(1)) != t:
            return fail(f"state target {m.group(1)} is not {t}")
        if Counter(_nums(m.group(2))) != Counter(state):
            return fail(f"state numbers [{m.group(2)}] are not {state}")
        if m.group(3) != format_operations(ops):
            return fail(f"state operations {m.group(3)} are not {format_operations(ops)}")
        i += 1
        m = EXPLORE_RE.fullmatch(lines[i]) if i < len(lines) else None
        if not m:
            return fail("expected 'Exploring Operation: ...'")
        x, op, y, z = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
        after = _apply_step(state, x, op, y, z)
        if isinstance(after, str):
            return fail(f"operation {after}")
        state = after
        if Counter(_nums(m.group(5))) != Counter(state):
            return fail(f"resulting numbers [{m.group(5)}] should be {state}")
        ops.append(f"{x}{op}{y}={z}")
        i += 1
        if i < len(lines) and (g := GOAL_RE.fullmatch(lines[i])):
            if i != len(lines) - 1:
                return fail("text continues after 'Goal Reached'")
            if state != [t] or int(g.group(1)) != t or int(g.group(2)) != t:
                return fail(f"'Goal Reached' claimed with numbers {state} and target {t}")
            return Verdict(ok=True, reason="ok", operations=ops, expression=expression_for(problem, ops))
        g = GENERATED_RE.fullmatch(lines[i]) if i < len(lines) else None
        if g:
            if (
                int(g.group(2)) != t
                or Counter(_nums(g.group(3))) != Counter(state)
                or f"{g.group(4)}{g.group(5)}{g.group(6)}={g.group(7)}" != ops[-1]
            ):
                return fail("'Generated Node' line disagrees with the operation explored")
            expected_node = g.group(1)
            i += 1
        else:
            m = MOVE_RE.fullmatch(lines[i]) if i < len(lines) else None
            expected_node = m.group(1) if m else expected_node


def state_reachable(problem: Problem, text: str) -> bool:
    """Whether the last ``Current State`` line of ``text`` is a true state of ``problem`` that can still reach the goal.

    True state: its target is the problem's and its ``Operations`` list replays from the problem's numbers to
    exactly its numbers. A child whose opening state fails this cannot solve the problem whatever it searches, so
    over a root's children it gives the ceiling the root's own choices leave to the search.

    Args:
        problem (Problem): The problem.
        text (str): A thread prompt or transcript (e.g. ``Moving to Node #0,1`` and its ``Current State`` line).

    Returns:
        bool: ``False`` also when ``text`` has no ``Current State`` line.
    """
    states = list(STATE_RE.finditer(text))
    if not states:
        return False
    state = states[-1]
    numbers = _nums(state.group(2))
    replay = _replay_listed(problem, state.group(3))
    if int(state.group(1)) != problem.target or isinstance(replay, str) or Counter(replay[0]) != Counter(numbers):
        return False
    return bool(numbers) and solvable(numbers, problem.target)


def expression_for(problem: Problem, operations: Sequence[str]) -> str:
    """A human arithmetic expression built from the operations, e.g. ``(9/3)*(4+4)``.

    Args:
        problem (Problem): The problem whose numbers the operations consume.
        operations (Sequence[str]): Written operations such as ``"9/3=3"``, in order.

    Returns:
        str: An expression that evaluates to the last operation's result (the target for a solution).

    Raises:
        ValueError: When an operation is malformed, wrong, or uses a number that is not available.
    """
    pool: list[tuple[int, str]] = [(n, str(n)) for n in problem.numbers]
    for text in operations:
        m = re.fullmatch(_OP, text)
        if not m:
            raise ValueError(f"malformed operation {text!r}")
        x, op, y, z = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
        if apply(x, op, y) != z:
            raise ValueError(f"wrong arithmetic in {text!r}")
        parts = []
        for value in (x, y):
            k = next((k for k, (v, _) in enumerate(pool) if v == value), None)
            if k is None:
                raise ValueError(f"{value} is not available for {text!r}")
            expr = pool.pop(k)[1]
            parts.append(expr if expr.isdigit() else f"({expr})")
        pool.append((z, f"{parts[0]}{op}{parts[1]}"))
    return pool[-1][1] if pool else ""


class OperatorStats(BaseModel):
    """Counts of ``Exploring Operation`` lines for one operator."""

    total: int = 0
    correct: int = 0

    @property
    def accuracy(self) -> float:
        """Fraction with correct arithmetic (0 when there are none)."""
        return self.correct / self.total if self.total else 0.0


class StepStats(BaseModel):
    """Step-level quality of a trace: arithmetic by operator, operand availability, result consistency."""

    by_operator: dict[str, OperatorStats] = Field(default_factory=lambda: {o: OperatorStats() for o in OPERATORS})
    steps: int = 0
    correct: int = 0
    operands_available: int = 0
    results_consistent: int = 0

    @property
    def arithmetic_accuracy(self) -> float:
        """Fraction of steps whose ``x op y=z`` is right under the Countdown rules."""
        return self.correct / self.steps if self.steps else 0.0

    def __add__(self, other: StepStats) -> StepStats:
        merged = {
            o: OperatorStats(
                total=self.by_operator[o].total + other.by_operator[o].total,
                correct=self.by_operator[o].correct + other.by_operator[o].correct,
            )
            for o in OPERATORS
        }
        return StepStats(
            by_operator=merged,
            steps=self.steps + other.steps,
            correct=self.correct + other.correct,
            operands_available=self.operands_available + other.operands_available,
            results_consistent=self.results_consistent + other.results_consistent,
        )


def step_stats(text: str) -> StepStats:
    """Score every ``Exploring Operation`` line of a thread's text against the latest ``Current State`` line.

    Pass the whole sequence (context and completion), so the first step has the prompt's state to refer to.

    Args:
        text (str): Trace text.

    Returns:
        StepStats: Counts per operator; a step without a preceding state counts as unavailable and inconsistent.
    """
    stats = StepStats()
    state: Counter[int] | None = None
    for line in text.split("\n"):
        if m := STATE_RE.fullmatch(line):
            state = Counter(_nums(m.group(2)))
            continue
        m = EXPLORE_RE.fullmatch(line)
        if not m:
            continue
        x, op, y, z = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
        ok = apply(x, op, y) == z
        stats.steps += 1
        stats.correct += ok
        per = stats.by_operator[op]
        per.total += 1
        per.correct += ok
        if state is not None:
            rest = state.copy()
            rest.subtract([x, y])
            if min(rest.values(), default=0) >= 0:
                stats.operands_available += 1
                rest[z] += 1
                if +rest == Counter(_nums(m.group(5))):
                    stats.results_consistent += 1
    return stats
