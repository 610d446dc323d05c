"""Line templates of the Countdown trace format (docs/apr-format.md is the full reference).

Every writer (the solvers) and reader (the verifier, the APR dialect's child prompts) goes through these helpers, so
the byte format lives in one place.
"""

from __future__ import annotations

from collections.abc import Sequence

SPAWN_OPEN = "<Calling Sub Searches>\n"
SPAWN_CLOSE = "<End Calling Sub Searches>\n"
JOIN_OPEN = "<Sub Searches>\n"
JOIN_CLOSE = "<End Sub Searches>\n"
NO_SOLUTION = "No solution found.\n"
SUB_SEARCH_FAILED = "No solution found in sub search\n"


def format_numbers(numbers: Sequence[int]) -> str:
    """Python list repr of ``numbers``, e.g. ``[4, 9, 3]``.

    Args:
        numbers (Sequence[int]): The numbers.

    Returns:
        str: The repr, identical to ``str(list(numbers))``.
    """
    return "[" + ", ".join(map(str, numbers)) + "]"


def format_operations(operations: Sequence[str]) -> str:
    """Python list-of-str repr of ``operations``, e.g. ``['9-3=6']``.

    Args:
        operations (Sequence[str]): Written operations (they never contain quotes).

    Returns:
        str: The repr, identical to ``str(list(operations))``.
    """
    if not operations:
        return "[]"
    return "['" + "', '".join(operations) + "']"


def node_prompt(
    node: str,
    target: int,
    numbers: Sequence[int],
    operations: Sequence[str] = (),
    *,
    prefix: str = "",
) -> str:
    """The two lines that open a thread at ``node``: ``Moving to Node #...`` and ``Current State: ...``.

    Args:
        node (str): Node index such as ``0`` or ``0,1``.
        target (int): The goal.
        numbers (Sequence[int]): Numbers in the node's state.
        operations (Sequence[str]): Operations on the path from the root. Defaults to none.
        prefix (str): Conditioning prefix such as ``Sub Call Budget: 4 ``. Defaults to none.

    Returns:
        str: The prompt text, ending with a newline.
    """
    return (
        f"{prefix}Moving to Node #{node}\n"
        f"Current State: {target}:{format_numbers(numbers)}, Operations: {format_operations(operations)}\n"
    )


def budget_prefix(*, sub_call_budget: int | None = None, token_budget: int | None = None) -> str:
    """The optional conditioning prefix of a root prompt.

    Args:
        sub_call_budget (int | None): Number of child threads (APR thread-count conditioning).
        token_budget (int | None): Context budget in tokens (SoS+ conditioning).

    Returns:
        str: ``"Sub Call Budget: N "`` and/or ``"Token Budget: B "``, or ``""``.
    """
    out = ""
    if sub_call_budget is not None:
        out += f"Sub Call Budget: {sub_call_budget} "
    if token_budget is not None:
        out += f"Token Budget: {token_budget} "
    return out


def spawn_block(nodes: Sequence[str], *, level: int = 1) -> str:
    """The block a parent writes to end a call and spawn one child per node.

    Args:
        nodes (Sequence[str]): Start node of each child, in order.
        level (int): Level of the children. Defaults to 1.

    Returns:
        str: ``<Calling Sub Searches>`` ... ``<End Calling Sub Searches>``, newline-terminated.
    """
    body = "".join(f"<Start Sub Search {i} at level {level}> Moving to Node #{n}\n" for i, n in enumerate(nodes))
    return SPAWN_OPEN + body + SPAWN_CLOSE


def join_entry(index: int, node: str, path: str | None, *, level: int = 1) -> str:
    """One child's entry in the join block.

    Args:
        index (int): The child's position in the spawn block.
        node (str): The child's start node.
        path (str | None): The child's returned solution path, or ``None`` when it found none.
        level (int): Level of the child. Defaults to 1.

    Returns:
        str: A ``<Goal Reached in Sub Search ...>`` line plus the path, or a ``<No Solution ...>`` line.
    """
    if path is None:
        return f"<No Solution in Sub Search {index} at level {level} at Node #{node}>\n"
    return f"<Goal Reached in Sub Search {index} at level {level} at Node #{node}>\n{path}"


def goal_line(value: int, target: int) -> str:
    """``"{value},{target} equal: Goal Reached\\n"``."""
    return f"{value},{target} equal: Goal Reached\n"


def returned_path(thread_text: str) -> str | None:
    """What a finished child returns on join: the text after its second-to-last ``Goal Reached`` line.

    The rule is the `apr` dialect's (`spawnjoin.dialects.apr.solution_path`); this name is kept for data code.

    Args:
        thread_text (str): The child's text after its prompt.

    Returns:
        str | None: The solution path, or ``None`` when the child did not reach the goal twice.
    """
    from spawnjoin.dialects.apr import solution_path

    return solution_path(thread_text)


def child_prompt(parent_text: str, node: str) -> str:
    """Rebuild a child's prompt from its parent's text, exactly as the runtime's `apr` dialect does on spawn.

    Args:
        parent_text (str): The parent's text up to (at least) the ``Generated Node`` line.
        node (str): The child's start node, e.g. ``0,1``.

    Returns:
        str: ``Moving to Node #node\\nCurrent State: T:[...], Operations: [...]\\n``.

    Raises:
        ValueError: When the parent text has no readable ``Generated Node`` line for `node`.
    """
    from spawnjoin.dialects.apr import child_prompts

    prompt = child_prompts(parent_text).get(node)
    if prompt is None:
        raise ValueError(f"no readable 'Generated Node #{node}' line in the parent text")
    return prompt
