"""The thread tree of a solve (`Trace`), its `Metrics`, and JSON save/load.

Metric definitions (also in docs/concepts.md):

* **threads**: threads that ran (the root included; children a budget refused are not counted).
* **total_tokens**: tokens generated over every call of every thread.
* **sequential_tokens**: the critical path. For a thread, `seq(t) = own(t) + sum over t's spawns of
  max(seq(c) for c in that spawn's children)`, where `own(t)` is the tokens t generated itself; the solve's
  value is `seq(root)`. With unlimited parallel decoding this is the number of decoding steps.
* **max_context**: the largest `prompt_tokens + completion_tokens` of any single call: the context window a
  server needs for this solve.
* **cached_tokens**: prompt tokens the engine served from its prefix cache, summed (None when unknown).
* **wall_time**: seconds from the start of the solve to its end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

__all__ = [
    "ThreadStatus",
    "CallTrace",
    "SpawnTrace",
    "ThreadTrace",
    "Metrics",
    "Trace",
    "compute_metrics",
    "SCHEMA_VERSION",
]

SCHEMA_VERSION = 1

ThreadStatus = Literal["pending", "running", "waiting", "done", "failed", "cancelled"]


class CallTrace(BaseModel):
    """One backend request of a thread: the context it continued and what it generated."""

    context: str
    text: str = ""
    finish_reason: str | None = None
    matched_stop: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int = 0
    cached_tokens: int | None = None
    started_at: float = 0.0
    finished_at: float | None = None
    token_ids: list[int] | None = None
    """The generated token ids when the backend reports them (`Finish.token_ids`; the embedded engine does)."""


class SpawnTrace(BaseModel):
    """A spawn: after call `after_call` the thread asked for `requested` children and ran `children`."""

    after_call: int
    requested: int
    children: list[str] = Field(default_factory=list)
    note: str | None = None
    join_text: str | None = None


class ThreadTrace(BaseModel):
    """One reasoning thread: its prompt, calls, spawns, status and timings."""

    id: str
    parent_id: str | None = None
    depth: int = 0
    label: str = ""
    prompt: str
    calls: list[CallTrace] = Field(default_factory=list)
    spawns: list[SpawnTrace] = Field(default_factory=list)
    status: ThreadStatus = "pending"
    reason: str | None = None
    malformed: bool = False
    """The dialect ended this thread because its spawn block was malformed (`Done.malformed`)."""
    error: str | None = None
    result: str | None = None
    started_at: float = 0.0
    finished_at: float | None = None

    @property
    def tokens(self) -> int:
        """Tokens this thread generated itself (children excluded)."""
        return sum(c.completion_tokens for c in self.calls)

    @property
    def transcript(self) -> str:
        """The thread's text as its last call saw it: the last context plus what that call generated."""
        if not self.calls:
            return self.prompt
        return self.calls[-1].context + self.calls[-1].text

    @property
    def generated(self) -> str:
        """Everything after the thread's prompt in its transcript (cheap: no copy of the prompt)."""
        if not self.calls:
            return ""
        last = self.calls[-1]
        if last.context.startswith(self.prompt):
            return last.context[len(self.prompt):] + last.text
        return self.transcript

    @property
    def children(self) -> list[str]:
        """Ids of every child, in spawn order."""
        return [c for s in self.spawns for c in s.children]


class Metrics(BaseModel):
    """Summary figures of a solve; see the module docstring for exact definitions."""

    threads: int = 0
    total_tokens: int = 0
    sequential_tokens: int = 0
    max_context: int = 0
    cached_tokens: int | None = None
    spawns: int = 0
    wall_time: float = 0.0


class Trace(BaseModel):
    """The whole thread tree of a solve, flat by id (`root_id` is the tree's root)."""

    schema_version: int = SCHEMA_VERSION
    dialect: str = ""
    backend: str = ""
    root_id: str
    threads: dict[str, ThreadTrace]
    metrics: Metrics = Field(default_factory=Metrics)
    started_at: float = 0.0
    finished_at: float | None = None
    status: str = "running"
    error: str | None = None
    answer: str | None = None

    @property
    def root(self) -> ThreadTrace:
        """The root thread."""
        return self.threads[self.root_id]

    def children_of(self, thread_id: str) -> list[ThreadTrace]:
        """The children of `thread_id`, in spawn order."""
        return [self.threads[c] for c in self.threads[thread_id].children if c in self.threads]

    def walk(self) -> list[ThreadTrace]:
        """Every thread, depth first from the root, children in spawn order."""
        out: list[ThreadTrace] = []
        stack = [self.root_id]
        while stack:
            tid = stack.pop()
            out.append(self.threads[tid])
            stack.extend(reversed(self.threads[tid].children))
        return out

    @property
    def malformed_spawns(self) -> int:
        """Threads a dialect ended for a malformed spawn block.

        A thread counts when its `malformed` flag is set; traces saved before that field existed are read by
        their `reason`, which every dialect starts with "malformed spawn".
        """
        return sum(1 for t in self.threads.values() if t.malformed or (t.reason or "").startswith("malformed spawn"))

    def save(self, path: str | Path) -> Path:
        """Write the trace as JSON to `path` and return it."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.model_dump_json(indent=1))
        return p

    @classmethod
    def load(cls, path: str | Path) -> Trace:
        """Read a trace written by `save`; rejects other schema versions with a clear message."""
        data = json.loads(Path(path).read_text())
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"{path}: trace schema version {version!r}, this spawnjoin reads version {SCHEMA_VERSION}"
            )
        return cls.model_validate(data)


def _sequential(trace: Trace, thread_id: str, memo: dict[str, int]) -> int:
    if thread_id in memo:
        return memo[thread_id]
    thread = trace.threads[thread_id]
    total = thread.tokens
    for spawn in thread.spawns:
        kids = [_sequential(trace, c, memo) for c in spawn.children if c in trace.threads]
        total += max(kids, default=0)
    memo[thread_id] = total
    return total


def compute_metrics(trace: Trace, *, wall_time: float | None = None) -> Metrics:
    """Compute `Metrics` from a trace (pure; see the module docstring for the definitions)."""
    ran = [t for t in trace.threads.values() if t.calls]
    cached = [c.cached_tokens for t in ran for c in t.calls if c.cached_tokens is not None]
    contexts = [(c.prompt_tokens or 0) + c.completion_tokens for t in ran for c in t.calls]
    if wall_time is None:
        end = trace.finished_at if trace.finished_at is not None else trace.started_at
        wall_time = max(0.0, end - trace.started_at)
    return Metrics(
        threads=len(ran),
        total_tokens=sum(t.tokens for t in ran),
        sequential_tokens=_sequential(trace, trace.root_id, {}),
        max_context=max(contexts, default=0),
        cached_tokens=sum(cached) if cached else None,
        spawns=sum(len(t.spawns) for t in ran),
        wall_time=wall_time,
    )
