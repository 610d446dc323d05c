"""The whole dialect contract: how spawn() and join() look in a model's text.

The scheduler drives every thread the same way and asks its dialect four questions:

1. `stop_strings(context)`: which strings end a request continuing `context` (so a spawn block
   suspends the thread).
2. `root_prompt(prompt, budget)`: the root thread's context for a user prompt.
3. `after_call(context, text, finish_reason)`: the request ended with `text` (the matched stop string
   re-appended); is it a `Spawn` (children to run, each with its own prompt) or `Done`?
4. `join(context, text, spawn, outcomes)`: every child has ended; the parent's next context.

and, for results, `child_result(text)` and `answer(text)` (a thread's text after its prompt). A dialect holds no I/O and imports
nothing from the scheduler; malformed model output yields `Done(reason=...)`, never an exception.
"""

from __future__ import annotations

import abc
from typing import Literal

from pydantic import BaseModel, ConfigDict

from spawnjoin.budget import Budget

__all__ = ["ChildSpec", "Spawn", "Done", "ChildOutcome", "Dialect"]


class ChildSpec(BaseModel):
    """A child thread a spawn asks for: its label (for people) and its complete prompt."""

    model_config = ConfigDict(frozen=True)

    label: str
    prompt: str


class Spawn(BaseModel):
    """The call ended by asking for children."""

    model_config = ConfigDict(frozen=True)

    children: tuple[ChildSpec, ...]
    block: str = ""
    """The spawn text as the model wrote it (kept in the trace)."""


class Done(BaseModel):
    """The thread is finished. `reason` is None for a normal end, else why it ended early.

    With `malformed=True` the model wrote a spawn block the dialect could not read; the scheduler records the
    flag in the thread's trace (`ThreadTrace.malformed`, counted by `Trace.malformed_spawns`), and the reason
    starts with "malformed spawn" so that a reader of the trace sees why.
    """

    model_config = ConfigDict(frozen=True)

    reason: str | None = None
    malformed: bool = False


class ChildOutcome(BaseModel):
    """How a child ended, as the parent's join sees it.

    `status` is `done`, `failed`, `cancelled`, or `skipped` (a budget refused to start it).
    `text` is everything the child's transcript holds after its prompt; `result` is what
    `Dialect.child_result` extracted from it (None: nothing to report).
    """

    model_config = ConfigDict(frozen=True)

    index: int
    label: str
    status: Literal["done", "failed", "cancelled", "skipped"]
    prompt: str
    text: str = ""
    result: str | None = None
    reason: str | None = None


class Dialect(abc.ABC):
    """How spawn/join look in text. Subclass and implement the abstract methods; see the module docs."""

    name: str = "dialect"

    shares_prefix: bool = False
    """Children continue the parent's context (so a prefix cache helps and requests share a server)."""

    @abc.abstractmethod
    def stop_strings(self, context: str) -> tuple[str, ...]:
        """Strings that end a request continuing `context` (a spawn block's end, a child's end)."""

    def root_prompt(self, prompt: str, budget: Budget | None = None) -> str:
        """The root thread's full context for the user's `prompt` (default: unchanged)."""
        return prompt

    @abc.abstractmethod
    def after_call(self, context: str, text: str, finish_reason: str) -> Spawn | Done:
        """Decide what a finished request means. `text` ends with the matched stop string, if any."""

    @abc.abstractmethod
    def join(self, context: str, text: str, spawn: Spawn, outcomes: list[ChildOutcome]) -> str:
        """The parent's next context once its children ended (skipped ones included, in order)."""

    def child_result(self, text: str) -> str | None:
        """What a finished child reports to its parent, from its `text` after its prompt (default: all)."""
        return text

    def answer(self, text: str) -> str | None:
        """The final answer in the root's `text` after its prompt (default: that text, stripped)."""
        return text.strip() or None

