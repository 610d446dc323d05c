"""Several servers behind one backend: least outstanding requests, prefix affinity, dead endpoints skipped.

Routing for each attempt:

1. A request whose `GenerationRequest.affinity` key was routed before goes to the same endpoint while that
   endpoint is up, so requests sharing a prefix (sibling threads) hit the same prefix cache.
2. Otherwise the endpoint with the fewest requests in flight wins (ties rotate).
3. An endpoint that refuses connections (`ConnectError` before any data) is marked down for ``down_for``
   seconds and the request moves at once to the next endpoint. After ``down_for`` it is tried again; when every
   endpoint is down they are all tried anyway, so a restarted server is found.

A stream that breaks after some data is retried through the one retry loop, resumed from the text received
(possibly on another endpoint), so one dead endpoint does not fail a solve.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, cast

from spawnjoin._constants import DEFAULT_DOWN_FOR, DEFAULT_MAX_RETRIES
from spawnjoin._exceptions import ConfigError, ConnectError
from spawnjoin.backends._retry import RetryPolicy, retrying_stream
from spawnjoin.backends.base import Backend, Chunk, Finish, GenerationRequest

__all__ = ["MultiBackend", "EndpointStatistics"]

_AFFINITY_KEYS = 100_000


@dataclass(frozen=True)
class EndpointStatistics:
    """A snapshot of one endpoint's state."""

    name: str
    in_flight: int
    served: int
    failures: int
    down: bool


class MultiBackend(Backend):
    """Routes requests over several backends, one per server.

    Args:
        backends: One backend per endpoint (give them ``max_retries=0``: this backend retries and fails over).
        down_for: Seconds an endpoint that refused connections is skipped.
        retry: Retry settings for broken streams (resumed, possibly elsewhere).
        clock: Monotonic clock (tests pass a fake one).
    """

    name = "multi"

    def __init__(
        self,
        backends: Sequence[Backend],
        *,
        down_for: float = DEFAULT_DOWN_FOR,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not backends:
            raise ConfigError("MultiBackend needs at least one backend")
        self.backends = list(backends)
        self.capabilities = self.backends[0].capabilities
        self.retry = retry or RetryPolicy(max_retries=DEFAULT_MAX_RETRIES)
        self._down_for = down_for
        self._clock = clock
        n = len(self.backends)
        self._in_flight = [0] * n
        self._served = [0] * n
        self._failures = [0] * n
        self._down_until = [0.0] * n
        self._affinity: OrderedDict[str, int] = OrderedDict()
        self._turn = itertools.count()

    @classmethod
    def from_urls(
        cls,
        urls: Sequence[str],
        *,
        factory: Callable[..., Backend] | None = None,
        down_for: float = DEFAULT_DOWN_FOR,
        retry: RetryPolicy | None = None,
        **options: Any,
    ) -> MultiBackend:
        """One backend per URL, built by ``factory(url, max_retries=0, **options)``.

        Args:
            urls: Server base URLs.
            factory: Backend class or function; defaults to `OpenAICompletions`.
            down_for: Seconds a dead endpoint is skipped.
            retry: Retry settings of the combined backend.
            **options: Passed to every factory call (model, timeouts, limits, ...).
        """
        if factory is None:
            from spawnjoin.backends.openai import OpenAICompletions

            factory = OpenAICompletions
        return cls([factory(url, max_retries=0, **options) for url in urls], down_for=down_for, retry=retry)

    def __repr__(self) -> str:
        return f"MultiBackend({self.backends!r})"

    def statistics(self) -> list[EndpointStatistics]:
        """The state of every endpoint, in order."""
        now = self._clock()
        return [
            EndpointStatistics(
                repr(b), self._in_flight[i], self._served[i], self._failures[i], self._down_until[i] > now
            )
            for i, b in enumerate(self.backends)
        ]

    def _up(self, i: int) -> bool:
        return self._down_until[i] <= self._clock()

    def _pick(self, request: GenerationRequest, tried: set[int]) -> int | None:
        untried = [i for i in range(len(self.backends)) if i not in tried]
        if not untried:
            return None
        healthy = [i for i in untried if self._up(i)]
        key = request.affinity
        if key is not None and self._affinity.get(key) in healthy:
            self._affinity.move_to_end(key)
            return self._affinity[key]
        pool = healthy or sorted(untried, key=lambda i: self._down_until[i])[:1]
        turn = next(self._turn)
        choice = min(pool, key=lambda i: (self._in_flight[i], (i - turn) % len(self.backends)))
        if key is not None:
            self._affinity[key] = choice
            self._affinity.move_to_end(key)
            if len(self._affinity) > _AFFINITY_KEYS:
                self._affinity.popitem(last=False)
        return choice

    async def _attempt(self, request: GenerationRequest) -> AsyncIterator[Chunk | Finish]:
        tried: set[int] = set()
        while True:
            i = self._pick(request, tried)
            if i is None:
                raise ConnectError("no endpoint could be reached", request_id=request.request_id)
            tried.add(i)
            started = False
            self._in_flight[i] += 1
            try:
                async with aclosing(
                    cast(AsyncGenerator[Chunk | Finish, None], self.backends[i].stream(request))
                ) as items:
                    async for item in items:
                        if not started:
                            started = True
                            self._down_until[i] = 0.0
                        if type(item) is Finish:
                            self._served[i] += 1
                        yield item
                return
            except ConnectError:
                self._failures[i] += 1
                if started:
                    raise
                self._down_until[i] = self._clock() + self._down_for
                if len(tried) == len(self.backends):
                    raise
            except Exception:
                self._failures[i] += 1
                raise
            finally:
                self._in_flight[i] -= 1

    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk | Finish]:
        # Returned, not re-yielded: closing the stream closes the retry loop and the HTTP stream at once.
        return retrying_stream(request, self._attempt, self.retry)

    async def count_tokens(self, text: str) -> int | None:
        for i, backend in enumerate(self.backends):
            if self._up(i):
                return await backend.count_tokens(text)
        return await self.backends[0].count_tokens(text)

    async def context_window(self) -> int | None:
        for i, backend in enumerate(self.backends):
            if self._up(i):
                window = await backend.context_window()
                if window is not None:
                    return window
        return None

    async def aclose(self) -> None:
        for backend in self.backends:
            await backend.aclose()
