"""The Countdown `Task`: prompt format and verified answers for the runtime."""

from __future__ import annotations

from spawnjoin._exceptions import ConfigError
from spawnjoin.tasks.base import Task
from spawnjoin.tasks.countdown.problems import parse_problem, root_prompt
from spawnjoin.tasks.countdown.verify import expression_for, verify_path

__all__ = ["CountdownTask"]


class CountdownTask(Task):
    """Countdown: reach the target from the numbers with + - * /.

    Prompts may be human (`"24 4 9 3"`, `"target 24 from 4 9 3"`) or already in the trace format
    (`Moving to Node #0 ...`), which is passed through. The answer is an arithmetic expression, and only
    when the root's final path verifies.
    """

    name = "countdown"

    def format_prompt(self, problem: str) -> str:
        """The APR root prompt for `problem`."""
        if "Current State:" in problem:
            return problem if problem.endswith("\n") else problem + "\n"
        try:
            return root_prompt(parse_problem(problem))
        except ValueError as exc:
            raise ConfigError(f"not a Countdown problem: {exc}") from exc

    def extract_answer(self, problem: str, transcript: str, dialect_answer: str | None) -> str | None:
        """`expr = target` when the root's final path verifies, else None."""
        try:
            parsed = parse_problem(problem)
        except ValueError:
            return dialect_answer
        verdict = verify_path(parsed, transcript)
        if not verdict.ok:
            return None
        return f"{expression_for(parsed, verdict.operations)} = {parsed.target}"
