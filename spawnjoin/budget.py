"""`Budget`: the limits a solve runs under."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Budget"]


class Budget(BaseModel):
    """Limits on one solve. A spawn that would break a limit is not an error: the scheduler grants fewer
    children (possibly none), the dialect tells the parent, and the trace records it.

    Args:
        max_threads: Most threads in the whole tree, the root included.
        max_children: Most children one spawn may start.
        max_depth: Deepest thread allowed (the root is depth 0).
        max_total_tokens: Most tokens generated over all threads (None: no limit).
        context_window: Per-thread context window in tokens; each request's `max_tokens` is sized so that
            prompt + max_tokens fits (None: the backend's own window, if it reports one).
        max_tokens_per_call: Upper bound on one request's `max_tokens` (None: only the window limits it).
        deadline: Wall-clock seconds for the whole solve; when it passes every thread is cancelled and the
            partial tree is returned (None: no deadline).
        max_concurrency: Most backend requests in flight at once for this solve (None: no limit).
    """

    model_config = ConfigDict(frozen=True)

    max_threads: int = Field(default=64, ge=1)
    max_children: int = Field(default=16, ge=0)
    max_depth: int = Field(default=4, ge=0)
    max_total_tokens: int | None = Field(default=None, ge=1)
    context_window: int | None = Field(default=None, ge=1)
    max_tokens_per_call: int | None = Field(default=None, ge=1)
    deadline: float | None = Field(default=None, gt=0)
    max_concurrency: int | None = Field(default=None, ge=1)
