"""The `apr` dialect: Adaptive Parallel Reasoning (Pan et al. 2025), byte-exact with its trace format.

A parent ends a call with a spawn block::

    <Calling Sub Searches>
    <Start Sub Search 0 at level 1> Moving to Node #0,0
    <Start Sub Search 1 at level 1> Moving to Node #0,1
    <End Calling Sub Searches>

Each child's prompt is rebuilt from the parent's `Generated Node #0,1: 24:[4, 6] Operation: 9-3=6` line
only (isolated context)::

    Moving to Node #0,1
    Current State: 24:[4, 6], Operations: ['9-3=6']

A child returns its solution path (the text after its second-to-last `Goal Reached`) or nothing, and the
parent continues from its text *before* the spawn block followed by the `<Sub Searches>` join message.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from spawnjoin.budget import Budget
from spawnjoin.dialects.base import ChildOutcome, ChildSpec, Dialect, Done, Spawn

__all__ = ["APRDialect", "SPAWN_OPEN", "SPAWN_CLOSE", "JOIN_OPEN", "JOIN_CLOSE", "child_prompts", "solution_path"]

SPAWN_OPEN = "<Calling Sub Searches>"
SPAWN_CLOSE = "<End Calling Sub Searches>"
JOIN_OPEN = "<Sub Searches>"
JOIN_CLOSE = "<End Sub Searches>"
GOAL = "Goal Reached"

_START_LINE = re.compile(r"<Start Sub Search (\d+) at level (\d+)> Moving to Node #(\d+(?:,\d+)*)")
_LINE = re.compile(
    r"Generated Node #(?P<node>\d+(?:,\d+)*): (?P<target>-?\d+):(?P<nums>\[[^\]\n]*\]) Operation: (?P<op>[^\n]+)"
    r"|Current State: -?\d+:\[[^\]\n]*\], Operations: (?P<state_ops>\[[^\n]*\])"
)


@dataclass(frozen=True, slots=True)
class _Call:
    index: int
    level: int
    node: str


class APRDialect(Dialect):
    """APR spawn/join syntax.

    Args:
        sub_call_budget: When set, the root prompt gets the thread-count conditioning prefix
            `Sub Call Budget: N ` that APR models are trained with.
    """

    name = "apr"
    shares_prefix = False

    def __init__(self, *, sub_call_budget: int | None = None) -> None:
        self.sub_call_budget = sub_call_budget

    def stop_strings(self, context: str) -> tuple[str, ...]:
        """APR threads stop only at the end of a spawn block (or at end-of-sequence)."""
        return (SPAWN_CLOSE,)

    def root_prompt(self, prompt: str, budget: Budget | None = None) -> str:
        """Adds `Sub Call Budget: N ` when configured."""
        if self.sub_call_budget is not None and not prompt.startswith("Sub Call Budget:"):
            return f"Sub Call Budget: {self.sub_call_budget} {prompt}"
        return prompt

    def after_call(self, context: str, text: str, finish_reason: str) -> Spawn | Done:
        """A call ending with `<End Calling Sub Searches>` is a spawn; anything else finishes the thread."""
        if not text.endswith(SPAWN_CLOSE):
            return Done(reason=None if finish_reason in ("eos", "stop") else f"stopped: {finish_reason}")
        start = text.rfind(SPAWN_OPEN)
        if start < 0:
            return Done(reason=f"malformed spawn: {SPAWN_CLOSE} without {SPAWN_OPEN}", malformed=True)
        block = text[start:]
        calls, error = _parse_block(block)
        if error:
            return Done(reason=f"malformed spawn: {error}", malformed=True)
        nodes = child_prompts(context + text[:start])
        children = []
        for call in calls:
            prompt = nodes.get(call.node)
            if prompt is None:
                return Done(
                    reason=f"malformed spawn: no readable 'Generated Node #{call.node}' line to start sub search "
                    f"{call.index} from",
                    malformed=True,
                )
            children.append(ChildSpec(label=f"Node #{call.node}", prompt=prompt))
        return Spawn(children=tuple(children), block=block)

    def join(self, context: str, text: str, spawn: Spawn, outcomes: list[ChildOutcome]) -> str:
        """The text before the spawn block, then `<Sub Searches>` with one entry per child."""
        calls, _ = _parse_block(spawn.block)
        parts = [context, text[: text.rfind(SPAWN_OPEN)], JOIN_OPEN, "\n"]
        for call, outcome in zip(calls, outcomes, strict=False):
            where = f"Sub Search {call.index} at level {call.level} at Node #{call.node}>\n"
            if outcome.result:
                parts += ["<Goal Reached in ", where, outcome.result]
            else:
                parts += ["<No Solution in ", where]
        parts += [JOIN_CLOSE, "\n"]
        return "".join(parts)

    def child_result(self, text: str) -> str | None:
        """The child's solution path: its text after the second-to-last `Goal Reached`, or None."""
        return solution_path(text)

    def answer(self, text: str) -> str | None:
        """The root's final path from the root node to the goal, or None when it found none."""
        return solution_path(text)


def solution_path(text: str) -> str | None:
    """A thread's solution path: its text after the second-to-last `Goal Reached`, or None.

    The path must start with `Moving to Node #` (anything else is not a path a parent can use); it ends
    with the last `Goal Reached` and a line break.
    """
    last = text.rfind(GOAL)
    if last < 0:
        return None
    previous = text.rfind(GOAL, 0, last)
    if previous < 0:
        return None
    start = previous + len(GOAL)
    if text.startswith("\n", start):
        start += 1
    path = text[start : last + len(GOAL)] + "\n"
    # A path starts by moving to its first node; anything else is not a path the parent can use.
    return path if path.startswith("Moving to Node #") else None


def _parse_block(block: str) -> tuple[list[_Call], str | None]:
    lines = block.split("\n")
    if lines[0] != SPAWN_OPEN or lines[-1] != SPAWN_CLOSE:
        return [], "the block must start and end on its own lines"
    calls: list[_Call] = []
    for line in lines[1:-1]:
        m = _START_LINE.fullmatch(line)
        if m is None:
            return [], f"unreadable line in spawn block: {line[:80]!r}"
        calls.append(_Call(index=int(m.group(1)), level=int(m.group(2)), node=m.group(3)))
    if not calls:
        return [], "the spawn block lists no sub searches"
    if [c.index for c in calls] != list(range(len(calls))):
        return [], "sub searches must be numbered 0, 1, 2, ... in order"
    if len({c.node for c in calls}) != len(calls):
        return [], "two sub searches start at the same node"
    return calls, None


def child_prompts(history: str) -> dict[str, str | None]:
    """Every `Generated Node` in a parent's `history` mapped to the child prompt it yields (None if unreadable).

    One pass: the operations of a generated node are those of the `Current State` line it was generated
    under, plus its own operation. A node generated twice keeps its last line.
    """
    nodes: dict[str, str | None] = {}
    ops_text: str | None = "[]"
    for m in _LINE.finditer(history):
        if m.group("state_ops") is not None:
            ops_text = m.group("state_ops")
            continue
        node, target, nums, op = m.group("node"), m.group("target"), m.group("nums"), m.group("op").strip()
        nodes[node] = _child_prompt(node, target, nums, op, ops_text)
    return nodes


def _child_prompt(node: str, target: str, nums: str, op: str, parent_ops_text: str | None) -> str | None:
    try:
        parent_ops = ast.literal_eval(parent_ops_text) if parent_ops_text is not None else None
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(parent_ops, list) or not all(isinstance(o, str) for o in parent_ops):
        return None
    ops = [*parent_ops, op]
    return f"Moving to Node #{node}\nCurrent State: {target}:{nums}, Operations: {ops!r}\n"
