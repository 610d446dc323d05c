"""Demonstrations written by the solvers: a tree of threads, each a list of calls.

A *call* is one generation of one thread: the model is given ``context`` and writes ``target``. SFT trains on every
call of every thread as its own sequence. A parent's call ends with a spawn block; its next call's context is
everything before that block plus the join block the runtime builds from its children's results.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import BaseModel, Field

from .problems import Problem


class Call(BaseModel):
    """One generation: the model reads ``context`` and writes ``target``."""

    context: str
    target: str

    @property
    def text(self) -> str:
        """The whole sequence, ``context + target``."""
        return self.context + self.target


class ThreadDemo(BaseModel):
    """One thread of a demonstration and, recursively, the threads it spawned."""

    thread_path: str = Field(description="'root', then '.i' per level: 'root.2' is the root's third child.")
    start_node: str = Field(description="Node index the thread starts at, e.g. '0' or '0,1'.")
    level: int = 0
    calls: list[Call]
    children: list[ThreadDemo] = Field(default_factory=list)
    spawned_at: int | None = Field(
        default=None, description="Index of the parent's call whose spawn block started this thread."
    )
    solved: bool = False

    @property
    def role(self) -> Literal["parent", "child"]:
        """``"parent"`` for the root thread, ``"child"`` for spawned threads."""
        return "parent" if self.level == 0 else "child"

    @property
    def text(self) -> str:
        """The thread's final text: its last call's context and target (includes the prompt and join blocks)."""
        last = self.calls[-1]
        return last.context + last.target

    def walk(self) -> Iterator[ThreadDemo]:
        """This thread, then its descendants depth-first in spawn order."""
        yield self
        for child in self.children:
            yield from child.walk()

    def spawn_groups(self) -> list[list[ThreadDemo]]:
        """Children grouped by the call that spawned them (one group per spawn block)."""
        groups: list[list[ThreadDemo]] = [[] for _ in range(len(self.calls) - 1)]
        for child in self.children:
            if child.spawned_at is not None:
                groups[child.spawned_at].append(child)
        return groups


class TraceTree(BaseModel):
    """A whole demonstration for one problem (``style="sos"`` trees are a single one-call thread)."""

    problem: Problem
    style: Literal["apr", "sos"]
    beam_size: int
    sub_call_beam_size: int | None = None
    spawn_prob: float | None = None
    root: ThreadDemo
    solved: bool

    @property
    def num_children(self) -> int:
        """Number of spawned threads in the whole tree."""
        return sum(1 for _ in self.root.walk()) - 1

    def threads(self) -> Iterator[ThreadDemo]:
        """Every thread, root first."""
        return self.root.walk()

    def calls(self) -> Iterator[tuple[ThreadDemo, int, Call]]:
        """Every ``(thread, call index, call)`` of the tree, root first."""
        for thread in self.root.walk():
            for i, call in enumerate(thread.calls):
                yield thread, i, call
