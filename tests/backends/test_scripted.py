"""The scripted in-process backend: outputs, stop strings, max_tokens, errors, speed."""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spawnjoin._exceptions import ConfigError, ContextWindowExceeded, ServerError
from spawnjoin.backends.scripted import ScriptedBackend, split_tokens
from tests.servers.helpers import collect, make_request


async def test_handler_string_is_split_into_word_tokens() -> None:
    backend = ScriptedBackend(lambda r: f"echo:{r.prompt} and more")
    got = await collect(backend, make_request("hi"))
    assert [c.text for c in got.chunks] == ["echo:hi", " and", " more"]
    assert got.finish.reason == "eos"
    assert got.finish.completion_tokens == 3 == got.chunk_tokens
    assert got.finish.prompt_tokens == 1
    assert backend.requests[0].prompt == "hi"


async def test_canned_outputs_in_order_then_a_clear_error() -> None:
    backend = ScriptedBackend(["one", ["t", "w", "o"]])
    assert (await collect(backend, make_request())).text == "one"
    got = await collect(backend, make_request())
    assert [c.text for c in got.chunks] == ["t", "w", "o"]
    with pytest.raises(ConfigError, match="ran out"):
        await collect(backend, make_request())


async def test_async_handler_and_async_iterable() -> None:
    async def pieces():
        for p in ["a", "b"]:
            yield p

    async def handler(request):
        await asyncio.sleep(0)
        return pieces()

    assert (await collect(ScriptedBackend(handler), make_request())).text == "ab"


async def test_stop_string_is_cut_and_reported() -> None:
    backend = ScriptedBackend(lambda r: ["<Out", "line>x</Out", "line>", "after"])
    got = await collect(backend, make_request(stop=("</Outline>",)))
    assert got.text == "<Outline>x"
    assert got.finish.reason == "stop"
    assert got.finish.matched_stop == "</Outline>"
    assert got.finish.completion_tokens == 3
    # No fragment of the stop string was ever streamed.
    assert all("</" not in c.text for c in got.chunks)


async def test_earliest_stop_wins() -> None:
    backend = ScriptedBackend(lambda r: "a B c A d")
    got = await collect(backend, make_request(stop=("A", "B")))
    assert got.text == "a " and got.finish.matched_stop == "B"


async def test_max_tokens_gives_length() -> None:
    backend = ScriptedBackend(lambda r: " w" * 10)
    got = await collect(backend, make_request(max_tokens=4))
    assert got.text == " w" * 4
    assert got.finish.reason == "length" and got.finish.completion_tokens == 4


async def test_held_back_prefix_is_flushed_at_the_end() -> None:
    backend = ScriptedBackend(lambda r: ["x", "</"])
    got = await collect(backend, make_request(stop=("</end>",)))
    assert got.text == "x</" and got.finish.reason == "eos"


async def test_errors_are_raised_including_mid_stream() -> None:
    def broken(request):
        yield "a"
        raise ServerError("boom")

    with pytest.raises(ServerError):
        await collect(ScriptedBackend(broken), make_request())
    with pytest.raises(ServerError):
        await collect(ScriptedBackend([ServerError("x")]), make_request())


async def test_context_window_checks_like_a_server() -> None:
    backend = ScriptedBackend(lambda r: "ok", context_window=4)
    assert await backend.context_window() == 4
    assert await backend.count_tokens("a b c") == 3
    with pytest.raises(ContextWindowExceeded):
        await collect(backend, make_request("a b c", max_tokens=2))
    got = await collect(backend, make_request("a b c"))
    assert got.text == "ok"


async def test_concurrent_streams_interleave() -> None:
    order: list[str] = []
    backend = ScriptedBackend(lambda r: [r.prompt] * 64)

    async def run(name: str) -> None:
        async for item in backend.stream(make_request(name)):
            order.append(getattr(item, "text", ""))

    await asyncio.gather(run("a"), run("b"))
    first_b = order.index("b")
    assert first_b < 64, "the second stream started before the first finished"


async def test_cancelling_the_consumer_closes_the_stream() -> None:
    backend = ScriptedBackend(lambda r: ["x"] * 1000, delay=0.001)

    async def consume() -> None:
        async for _ in backend.stream(make_request()):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_throughput_at_least_50k_chunks_per_second() -> None:
    tokens = ["x"] * 100_000
    backend = ScriptedBackend(lambda r: tokens)
    start = time.perf_counter()
    n = 0
    async for _ in backend.stream(make_request(stop=("</Thread>",))):
        n += 1
    rate = n / (time.perf_counter() - start)
    assert rate >= 50_000, f"{rate:,.0f} chunks/s"


def test_split_tokens_round_trips() -> None:
    assert "".join(split_tokens(" a  b\nc ")) == " a  b\nc "


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(st.text(alphabet="ab<>/", max_size=4), max_size=12),
    stops=st.lists(st.text(alphabet="ab<>/", min_size=1, max_size=4), max_size=3),
)
def test_stop_semantics_match_a_plain_search(pieces: list[str], stops: list[str]) -> None:
    """Streamed text equals the full text cut at the first stop a token-by-token server would see."""
    backend = ScriptedBackend(lambda r: pieces)
    got = asyncio.run(collect(backend, make_request(stop=tuple(stops))))
    text = ""
    expected, matched = None, None
    for piece in pieces:
        text += piece
        hits = [(text.find(s), s) for s in stops if s in text]
        if hits:
            at = min(h[0] for h in hits)
            matched = next(s for s in stops if text.find(s) == at)
            expected = text[:at]
            break
    if matched is None:
        assert got.text == "".join(pieces) and got.finish.reason == "eos"
    else:
        assert got.text == expected
        assert got.finish.matched_stop == matched and got.finish.reason == "stop"
