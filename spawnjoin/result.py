"""`SolveResult`: what `spawnjoin.solve` returns."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from spawnjoin.trace import Metrics, Trace

__all__ = ["SolveResult", "SolveStatus"]

SolveStatus = Literal["done", "failed", "cancelled", "deadline"]


class SolveResult(BaseModel):
    """The outcome of one solve.

    Attributes:
        answer: The dialect's (or task's) final answer, None when there is none.
        text: The root thread's transcript.
        status: `done`, `failed` (an error ended the root), `cancelled`, or `deadline`.
        error: What went wrong, when status is not `done`.
        trace: The whole thread tree (partial when the solve did not finish).
    """

    answer: str | None = None
    text: str = ""
    status: SolveStatus = "done"
    error: str | None = None
    trace: Trace

    @property
    def metrics(self) -> Metrics:
        """Shortcut for `trace.metrics`."""
        return self.trace.metrics
