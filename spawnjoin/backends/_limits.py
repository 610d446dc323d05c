"""Client-side request limits: a requests-per-second pace and a cap on requests in flight.

A backend takes one `Limiter.slot()` per attempt, so a retry waiting out its backoff holds no slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from asyncio_throttle import Throttler

__all__ = ["Limiter"]


class Limiter:
    """Paces request starts and caps concurrent requests.

    Args:
        requests_per_second: Most request starts per second (None: no pace). Starts are spread evenly,
            one every ``1 / requests_per_second`` seconds.
        max_concurrency: Most requests in flight at once (None: no cap).
    """

    def __init__(self, requests_per_second: float | None = None, max_concurrency: int | None = None) -> None:
        if requests_per_second is not None and requests_per_second <= 0:
            raise ValueError("requests_per_second must be positive")
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.requests_per_second = requests_per_second
        self.max_concurrency = max_concurrency
        self._throttler = (
            Throttler(rate_limit=1, period=1.0 / requests_per_second, retry_interval=0.005)
            if requests_per_second
            else None
        )
        self._semaphore = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self.in_flight = 0
        """Requests holding a slot now."""

    @property
    def active(self) -> bool:
        """Whether any limit is set."""
        return self._throttler is not None or self._semaphore is not None

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for a free slot and the pace, then hold the slot for the body."""
        if self._semaphore is not None:
            await self._semaphore.acquire()
        try:
            if self._throttler is not None:
                await self._throttler.acquire()
            self.in_flight += 1
            try:
                yield
            finally:
                self.in_flight -= 1
        finally:
            if self._semaphore is not None:
                self._semaphore.release()
