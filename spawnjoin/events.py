"""Typed runtime events and the `EventStream` that fans them out.

The runtime emits one event per state change; the live view, the trace recorder and applications
consume them. Events are small frozen dataclasses because token events sit on the hot path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

__all__ = [
    "ThreadStarted",
    "CallStarted",
    "TokensGenerated",
    "CallFinished",
    "Spawned",
    "Joined",
    "ThreadFinished",
    "SolveFinished",
    "Event",
    "EventStream",
]


@dataclass(slots=True, frozen=True)
class ThreadStarted:
    """A thread was created (the root, or a child of a spawn)."""

    thread_id: str
    parent_id: str | None
    depth: int
    label: str
    prompt: str
    time: float


@dataclass(slots=True, frozen=True)
class CallStarted:
    """A thread sent one request to the backend."""

    thread_id: str
    call_index: int
    prompt_tokens: int | None
    max_tokens: int | None
    time: float


@dataclass(slots=True, frozen=True)
class TokensGenerated:
    """A streamed piece of a thread's output."""

    thread_id: str
    text: str
    tokens: int
    time: float


@dataclass(slots=True, frozen=True)
class CallFinished:
    """A request ended (`reason` is the backend's finish reason)."""

    thread_id: str
    call_index: int
    reason: str
    matched_stop: str | None
    completion_tokens: int
    cached_tokens: int | None
    time: float


@dataclass(slots=True, frozen=True)
class Spawned:
    """A thread asked for `requested` children and got `child_ids` (fewer when a budget said so)."""

    thread_id: str
    child_ids: tuple[str, ...]
    requested: int
    note: str | None
    time: float


@dataclass(slots=True, frozen=True)
class Joined:
    """A thread's children are all finished and it resumes with `join_text`."""

    thread_id: str
    join_text: str
    time: float


@dataclass(slots=True, frozen=True)
class ThreadFinished:
    """A thread ended: `status` is done, failed or cancelled; `reason` says why."""

    thread_id: str
    status: str
    reason: str | None
    time: float


@dataclass(slots=True, frozen=True)
class SolveFinished:
    """The whole solve ended."""

    status: str
    answer: str | None
    time: float


Event = (
    ThreadStarted | CallStarted | TokensGenerated | CallFinished | Spawned | Joined | ThreadFinished | SolveFinished
)

_CLOSED = object()


class EventStream:
    """Fan-out of runtime events to synchronous hooks and asynchronous subscribers.

    Hooks (`add_hook`) run inline and must be fast; subscribers (`subscribe`) get their own unbounded queue
    and iterate until the solve ends.
    """

    def __init__(self) -> None:
        self._hooks: list[Callable[[Event], None]] = []
        self._queues: list[asyncio.Queue[object]] = []
        self._closed = False

    def add_hook(self, hook: Callable[[Event], None]) -> None:
        """Call `hook(event)` for every event, in order, on the event loop's thread."""
        self._hooks.append(hook)

    def subscribe(self) -> AsyncIterator[Event]:
        """An async iterator over every event emitted from now until the stream closes."""
        queue: asyncio.Queue[object] = asyncio.Queue()
        if self._closed:
            queue.put_nowait(_CLOSED)
        self._queues.append(queue)
        return self._iterate(queue)

    async def _iterate(self, queue: asyncio.Queue[object]) -> AsyncIterator[Event]:
        try:
            while True:
                item = await queue.get()
                if item is _CLOSED:
                    return
                yield item  # type: ignore[misc]
        finally:
            if queue in self._queues:
                self._queues.remove(queue)

    def emit(self, event: Event) -> None:
        """Deliver `event` to every hook and subscriber."""
        for hook in self._hooks:
            hook(event)
        for queue in self._queues:
            queue.put_nowait(event)

    def close(self) -> None:
        """End every subscription (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for queue in self._queues:
            queue.put_nowait(_CLOSED)

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed
