"""The one retry loop every network backend streams through, with resume.

`should_retry` is a pure decision (a `BackendError` says whether it is `retryable`); `retry_delay` honours a
server's Retry-After up to a cap, else backs off exponentially with jitter. `retrying_stream` drives the
attempts with tenacity and keeps what each attempt delivered: when a stream breaks after some text, the next
attempt continues from ``prompt + text received`` with ``max_tokens`` reduced by the tokens received, so a
greedy stream loses and repeats nothing. The request id stays the same on every attempt.

`guarded` puts the two time limits on one attempt: a read timeout (no data for N seconds is a retryable
`Timeout`) and the request's overall deadline (a final `Timeout`). It limits each wait for the next item,
never the consumer's own work between items.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_any
from tenacity.stop import stop_base

from spawnjoin._constants import (
    DEFAULT_MAX_RETRIES,
    INITIAL_RETRY_DELAY,
    MAX_RETRY_AFTER,
    MAX_RETRY_DELAY,
    RETRY_JITTER,
)
from spawnjoin._exceptions import BackendError, RateLimited, ServerError, Timeout
from spawnjoin.backends.base import Chunk, Finish, GenerationRequest

T = TypeVar("T")

__all__ = [
    "RetryPolicy",
    "guarded",
    "resume_request",
    "retry_delay",
    "retrying_call",
    "retrying_stream",
    "should_retry",
]

Attempt = Callable[[GenerationRequest], AsyncIterator["Chunk | Finish"]]

# asyncio.timeout (3.11+) bounds a wait in the current task; 3.10 falls back to wait_for.
_timeout = getattr(asyncio, "timeout", None)


class RetryPolicy(BaseModel):
    """How a backend retries a failed request.

    Args:
        max_retries: Retries after the first attempt (0: never retry).
        initial_delay: Backoff before the first retry, doubled each retry.
        max_delay: Cap on the backoff.
        max_retry_after: Cap on a server's Retry-After.
        jitter: Fraction of each backoff removed at random (0 to 1).
    """

    model_config = ConfigDict(frozen=True)

    max_retries: int = Field(default=DEFAULT_MAX_RETRIES, ge=0)
    initial_delay: float = Field(default=INITIAL_RETRY_DELAY, ge=0.0)
    max_delay: float = Field(default=MAX_RETRY_DELAY, ge=0.0)
    max_retry_after: float = Field(default=MAX_RETRY_AFTER, ge=0.0)
    jitter: float = Field(default=RETRY_JITTER, ge=0.0, le=1.0)


def should_retry(exc: BaseException) -> bool:
    """Whether a request that failed with `exc` may succeed if tried again (pure)."""
    return isinstance(exc, BackendError) and exc.retryable


def retry_delay(
    exc: BaseException | None,
    retries_done: int,
    policy: RetryPolicy,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before the next attempt.

    Args:
        exc: The error the last attempt failed with.
        retries_done: Retries already made (0 before the first retry).
        policy: The backoff settings.
        rand: Source of jitter in [0, 1).
    """
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        return min(max(exc.retry_after, 0.0), policy.max_retry_after)
    backoff = min(policy.initial_delay * 2.0**retries_done, policy.max_delay)
    return backoff * (1.0 - policy.jitter * rand())


def resume_request(request: GenerationRequest, text: str, tokens: int) -> GenerationRequest | None:
    """The request that continues `request` after `text` (`tokens` tokens) was received.

    Returns None when the token budget is already spent.
    """
    params = request.params
    if params.max_tokens is not None:
        left = params.max_tokens - tokens
        if left <= 0:
            return None
        params = params.model_copy(update={"max_tokens": left})
    return request.model_copy(update={"prompt": request.prompt + text, "params": params})


def _merge_finish(finish: Finish, tokens_before: int) -> Finish:
    """Counts of a resumed attempt's finish, restated for the whole request (its token ids cover only the
    resumed part, so they are dropped)."""
    if not tokens_before:
        return finish
    prompt = finish.prompt_tokens
    if prompt is not None:
        # The resumed prompt held the text received so far; its re-tokenisation may differ by a token.
        prompt = max(prompt - tokens_before, 0)
    completion = finish.completion_tokens
    if completion is not None:
        completion += tokens_before
    cached = finish.cached_tokens
    if cached is not None and prompt is not None:
        cached = min(cached, prompt)
    return Finish(finish.reason, finish.matched_stop, prompt, completion, cached)


def _wait(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    """tenacity's wait: `retry_delay` for the error the last attempt failed with."""

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return retry_delay(exc, state.attempt_number - 1, policy)

    return wait


async def retrying_call(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], object] = asyncio.sleep,
) -> T:
    """Await `call()` (a unary request such as ``/tokenize``), retrying retryable errors as streams do.

    Args:
        call: Makes one attempt.
        policy: Retry settings (the same backoff and Retry-After handling as `retrying_stream`).
        sleep: Awaitable sleep (tests pass a fake one).
    """
    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.max_retries + 1),
        wait=_wait(policy),
        retry=retry_if_exception(should_retry),
        sleep=sleep,  # type: ignore[arg-type]
        reraise=True,
    )
    return await retrying(call)


async def retrying_stream(
    request: GenerationRequest,
    attempt: Attempt,
    policy: RetryPolicy,
    *,
    deadline: float | None = None,
    sleep: Callable[[float], object] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
) -> AsyncIterator[Chunk | Finish]:
    """Stream `request` through `attempt`, retrying and resuming on retryable errors.

    Args:
        request: The request to complete.
        attempt: Makes one attempt at a (possibly resumed) request: chunks, then one finish.
        policy: Retry settings.
        deadline: `clock()` time after which no retry starts.
        sleep: Awaitable sleep (tests pass a fake one).
        clock: Monotonic clock matching `deadline`.
        on_retry: Called with (error, retries made so far, seconds to wait) before each retry.
    """
    received: list[str] = []
    tokens = 0

    class PastDeadline(stop_base):
        def __call__(self, state: RetryCallState) -> bool:
            return deadline is not None and clock() + state.upcoming_sleep >= deadline

    def give_up(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        assert exc is not None
        exc.attempts = state.attempt_number  # type: ignore[attr-defined]
        if hasattr(exc, "add_note"):
            exc.add_note(
                f"spawnjoin gave up on request {request.request_id!r} after {state.attempt_number} attempts"
            )
        raise exc

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None:
            on_retry(state.outcome.exception(), state.attempt_number, state.upcoming_sleep)  # type: ignore[arg-type]

    retrying = AsyncRetrying(
        stop=stop_any(stop_after_attempt(policy.max_retries + 1), PastDeadline()),
        wait=_wait(policy),
        retry=retry_if_exception(should_retry),
        sleep=sleep,  # type: ignore[arg-type]
        retry_error_callback=give_up,
        before_sleep=before_sleep,
        reraise=True,
    )
    async for try_ in retrying:
        with try_:
            before = tokens
            current = resume_request(request, "".join(received), tokens) if received else request
            if current is None:
                yield Finish("length", completion_tokens=tokens)
                return
            async with aclosing(cast(AsyncGenerator[Chunk | Finish, None], attempt(current))) as items:
                async for item in items:
                    if type(item) is Chunk:
                        received.append(item.text)
                        tokens += item.tokens
                        yield item
                    else:
                        yield _merge_finish(item, before)  # type: ignore[arg-type]
                        return
            raise ServerError(
                "the stream ended before the server said why it finished",
                request_id=request.request_id,
            )


async def guarded(
    items: AsyncIterator[Chunk | Finish],
    *,
    read_timeout: float | None,
    deadline: float | None,
    request_id: str,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[Chunk | Finish]:
    """Re-yield `items`, bounding each wait by `read_timeout` and the overall `deadline`."""
    async with aclosing(cast(AsyncGenerator[Chunk | Finish, None], items)):
        while True:
            limit = read_timeout
            final = False
            if deadline is not None:
                left = deadline - clock()
                if limit is None or left <= limit:
                    limit, final = max(left, 0.0), True
            try:
                if limit is None:
                    item = await items.__anext__()
                elif _timeout is not None:
                    async with _timeout(limit):
                        item = await items.__anext__()
                else:  # Python 3.10
                    item = await asyncio.wait_for(items.__anext__(), limit)
            except StopAsyncIteration:
                return
            except (TimeoutError, asyncio.TimeoutError):
                if final:
                    raise Timeout(
                        f"request {request_id!r} passed its deadline", request_id=request_id, retryable=False
                    ) from None
                raise Timeout(
                    f"no data for {read_timeout:g} s on request {request_id!r}", request_id=request_id
                ) from None
            yield item


def timed_retrying_stream(
    request: GenerationRequest,
    attempt: Attempt,
    policy: RetryPolicy,
    *,
    read_timeout: float | None,
    timeout: float,
) -> AsyncIterator[Chunk | Finish]:
    """`retrying_stream` whose attempts are `guarded` by a read timeout and one deadline `timeout` s away.

    The stream is returned, not re-yielded, so closing it closes the retry loop and the HTTP stream at once.
    """
    deadline = time.monotonic() + timeout

    def guarded_attempt(current: GenerationRequest) -> AsyncIterator[Chunk | Finish]:
        return guarded(attempt(current), read_timeout=read_timeout, deadline=deadline,
                       request_id=request.request_id)

    return retrying_stream(request, guarded_attempt, policy, deadline=deadline)
