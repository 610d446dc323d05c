"""The one retry loop: the pure decision, delays, resume without loss, time limits."""

from __future__ import annotations

import asyncio

import pytest

from spawnjoin._exceptions import (
    BackendError,
    ConnectError,
    ContextWindowExceeded,
    ModelNotFound,
    RateLimited,
    ServerError,
    Timeout,
)
from spawnjoin.backends._retry import (
    RetryPolicy,
    guarded,
    resume_request,
    retry_delay,
    retrying_stream,
    should_retry,
)
from spawnjoin.backends.base import Chunk, Finish
from spawnjoin.backends.scripted import ScriptedBackend
from tests.servers.helpers import make_request


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ConnectError("x"), True),
        (Timeout("x"), True),
        (RateLimited("x"), True),
        (ServerError("x"), True),
        (ModelNotFound("x"), False),
        (ContextWindowExceeded("x"), False),
        (BackendError("x", status=400), False),
        (BackendError("x", status=409, retryable=True), True),
        (Timeout("deadline", retryable=False), False),
        (ValueError("x"), False),
        (asyncio.CancelledError(), False),
    ],
)
def test_should_retry_is_a_pure_decision(exc: BaseException, expected: bool) -> None:
    assert should_retry(exc) is expected


def test_retry_after_is_honoured_and_capped() -> None:
    policy = RetryPolicy(max_retry_after=10)
    assert retry_delay(RateLimited("x", retry_after=3.0), 0, policy) == 3.0
    assert retry_delay(RateLimited("x", retry_after=999.0), 0, policy) == 10
    assert retry_delay(RateLimited("x", retry_after=-1.0), 0, policy) == 0.0


def test_exponential_backoff_with_jitter() -> None:
    policy = RetryPolicy(initial_delay=0.5, max_delay=8, jitter=0.25)
    assert [retry_delay(ServerError("x"), n, policy, rand=lambda: 0.0) for n in range(6)] == [
        0.5,
        1,
        2,
        4,
        8,
        8,
    ]
    assert retry_delay(ServerError("x"), 1, policy, rand=lambda: 0.999) == pytest.approx(0.75, abs=0.01)
    # A 429 without Retry-After backs off like any other error.
    assert retry_delay(RateLimited("x"), 2, policy, rand=lambda: 0.0) == 2


def test_resume_request_extends_prompt_and_spends_budget() -> None:
    request = make_request("P", max_tokens=10, stop=("</x>",), affinity="a")
    resumed = resume_request(request, " abc", 3)
    assert resumed is not None
    assert resumed.prompt == "P abc"
    assert resumed.params.max_tokens == 7 and resumed.params.stop == ("</x>",)
    assert resumed.request_id == request.request_id and resumed.affinity == "a"
    assert resume_request(request, "x" * 10, 10) is None
    assert resume_request(make_request("P"), "x", 5).params.max_tokens is None  # type: ignore[union-attr]


def _flaky(fail_at: dict[int, BaseException]):
    """A scripted server of ' w0 w1 ...' that fails attempt n after 2 tokens, as `fail_at` says."""
    words = [f" w{i}" for i in range(12)]
    calls: list[str] = []

    def handler(request):
        attempt = len(calls)
        calls.append(request.prompt)
        done = len(request.prompt.split()) - 1

        def gen():
            for n, w in enumerate(words[done:]):
                if attempt in fail_at and n == 2:
                    raise fail_at[attempt]
                yield w

        return gen()

    return ScriptedBackend(handler), calls, "".join(words)


async def _drain(gen) -> tuple[str, Finish]:
    text, finish = "", None
    async for item in gen:
        if isinstance(item, Chunk):
            text += item.text
        else:
            finish = item
    assert finish is not None
    return text, finish


async def _no_sleep(_: float) -> None:
    await asyncio.sleep(0)


async def test_broken_streams_resume_without_loss_or_duplication() -> None:
    backend, calls, full = _flaky({0: ConnectError("drop"), 1: ServerError("500"), 2: Timeout("stall")})
    request = make_request("P", max_tokens=50)
    seen: list[tuple[str, int, float]] = []
    text, finish = await _drain(
        retrying_stream(
            request,
            backend.stream,
            RetryPolicy(),
            sleep=_no_sleep,
            on_retry=lambda e, n, d: seen.append((type(e).__name__, n, d)),
        )
    )
    assert text == full
    assert finish.completion_tokens == 12 and finish.reason == "eos"
    assert calls == ["P", "P w0 w1", "P w0 w1 w2 w3", "P w0 w1 w2 w3 w4 w5"]
    assert {r.request_id for r in backend.requests} == {request.request_id}
    assert [r.params.max_tokens for r in backend.requests] == [50, 48, 46, 44]
    assert [s[0] for s in seen] == ["ConnectError", "ServerError", "Timeout"]


async def test_budget_spent_before_the_break_ends_with_length() -> None:
    backend, _, full = _flaky({0: ConnectError("drop")})
    text, finish = await _drain(
        retrying_stream(make_request("P", max_tokens=2), backend.stream, RetryPolicy(), sleep=_no_sleep)
    )
    assert text == " w0 w1" and finish.reason == "length" and finish.completion_tokens == 2


async def test_retries_exhausted_raise_the_last_error_with_a_count() -> None:
    backend = ScriptedBackend(lambda r: ServerError("always", status=503))
    with pytest.raises(ServerError) as info:
        await _drain(
            retrying_stream(make_request(), backend.stream, RetryPolicy(max_retries=3), sleep=_no_sleep)
        )
    assert info.value.attempts == 4  # type: ignore[attr-defined]
    assert len(backend.requests) == 4


async def test_non_retryable_errors_are_raised_at_once() -> None:
    backend = ScriptedBackend(lambda r: ModelNotFound("nope"))
    with pytest.raises(ModelNotFound):
        await _drain(retrying_stream(make_request(), backend.stream, RetryPolicy(), sleep=_no_sleep))
    assert len(backend.requests) == 1


async def test_a_stream_without_finish_is_a_retryable_server_error() -> None:
    async def attempt(request):
        yield Chunk("x", 1)

    with pytest.raises(ServerError, match="ended before"):
        await _drain(retrying_stream(make_request(), attempt, RetryPolicy(max_retries=1), sleep=_no_sleep))


async def test_no_retry_starts_past_the_deadline() -> None:
    now = [100.0]
    backend = ScriptedBackend(lambda r: ServerError("down"))
    with pytest.raises(ServerError) as info:
        await _drain(
            retrying_stream(
                make_request(),
                backend.stream,
                RetryPolicy(initial_delay=5, jitter=0),
                deadline=103.0,
                clock=lambda: now[0],
                sleep=_no_sleep,
            )
        )
    assert info.value.attempts == 1  # type: ignore[attr-defined]


async def test_guarded_read_timeout_is_retryable_and_deadline_is_final() -> None:
    async def slow():
        yield Chunk("a", 1)
        await asyncio.sleep(10)
        yield Chunk("b", 1)

    with pytest.raises(Timeout) as info:
        async for _ in guarded(slow(), read_timeout=0.05, deadline=None, request_id="r"):
            pass
    assert info.value.retryable
    loop = asyncio.get_running_loop()
    with pytest.raises(Timeout) as info:
        async for _ in guarded(
            slow(), read_timeout=5, deadline=loop.time() + 0.05, request_id="r", clock=loop.time
        ):
            pass
    assert not info.value.retryable and "deadline" in str(info.value)


async def test_guarded_does_not_time_the_consumer() -> None:
    async def quick():
        for c in "abc":
            yield Chunk(c, 1)

    got = []
    async for item in guarded(quick(), read_timeout=0.02, deadline=None, request_id="r"):
        await asyncio.sleep(0.05)  # slower than the read timeout, but it is the consumer's time
        got.append(item.text)  # type: ignore[union-attr]
    assert got == ["a", "b", "c"]


async def test_closing_early_and_cancelling_propagate() -> None:
    backend = ScriptedBackend(lambda r: ["a"] * 100, delay=0.001)
    gen = retrying_stream(make_request(), backend.stream, RetryPolicy())
    assert isinstance(await gen.__anext__(), Chunk)
    await gen.aclose()

    async def consume() -> None:
        async for _ in retrying_stream(make_request(), backend.stream, RetryPolicy()):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
