"""The SGLang /generate backend against a protocol-faithful test server (not real SGLang: it needs a GPU)."""

from __future__ import annotations

import pytest

from spawnjoin._exceptions import ContextWindowExceeded, ServerError
from spawnjoin.backends._retry import RetryPolicy
from spawnjoin.backends.sglang import SGLangBackend
from tests.servers import Fault, SGLangServer
from tests.servers.helpers import collect, make_request
from tests.servers.scenarios import SCENARIOS, run_scenario

FAST = RetryPolicy(initial_delay=0.05, max_delay=0.2, max_retries=5)


@pytest.fixture
def server():
    with SGLangServer() as srv:
        yield srv


def backend_for(server: SGLangServer, **kwargs) -> SGLangBackend:
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("read_timeout", 0.8)  # below the 1 s stall fault, above scheduling noise
    return SGLangBackend(server.url, **kwargs)


async def test_cumulative_text_is_sliced_and_counted(server: SGLangServer) -> None:
    async with backend_for(server) as backend:
        got = await collect(backend, make_request("Once upon", max_tokens=15))
    assert len(got.chunks) == 15 and got.chunk_tokens == 15
    assert got.finish.reason == "length" and got.finish.completion_tokens == 15
    body = server.requests[0]
    assert body["text"] == "Once upon" and body["stream"] is True
    assert body["sampling_params"]["max_new_tokens"] == 15
    assert body["rid"].startswith("req-")


async def test_stream_interval_many_tokens_per_message() -> None:
    with SGLangServer(stream_interval=4) as srv:
        got = await collect(backend_for(srv), make_request("Once", max_tokens=10))
    assert got.finish.completion_tokens == 10 == got.chunk_tokens
    assert [c.tokens for c in got.chunks] == [4, 4, 2]


async def test_stop_string_held_back_then_trimmed(server: SGLangServer) -> None:
    backend = backend_for(server)
    full = (await collect(backend, make_request("Once upon", max_tokens=20))).text
    words = full.split(" ")
    stop = f" {words[4]} {words[5]}"  # spans two tokens: the first one is streamed before the match
    got = await collect(backend, make_request("Once upon", max_tokens=20, stop=(stop,)))
    assert got.text == full[: full.index(stop)]
    assert got.finish.reason == "stop" and got.finish.matched_stop == stop
    assert all(words[4] not in c.text for c in got.chunks)


async def test_eos_token_is_eos() -> None:
    with SGLangServer(eos_every=5) as srv:
        got = await collect(backend_for(srv), make_request("Once upon", max_tokens=300, stop=("zzz",)))
    assert got.finish.reason == "eos" and got.finish.matched_stop is None


async def test_cached_tokens_show_prefix_sharing(server: SGLangServer) -> None:
    backend = backend_for(server)
    first = await collect(backend, make_request("shared prefix here then a", max_tokens=3))
    second = await collect(backend, make_request("shared prefix here then b", max_tokens=3))
    assert first.finish.cached_tokens == 0 and second.finish.cached_tokens == 4
    assert backend.capabilities.prefix_cache


async def test_input_ids_and_exact_token_count(server: SGLangServer) -> None:
    backend = backend_for(server, encode=server.vocab.encode)
    assert backend.capabilities.tokenizer
    assert await backend.count_tokens("one two three") == 3
    got = await collect(backend, make_request("Once upon", max_tokens=5))
    assert server.requests[0]["input_ids"] == server.vocab.encode("Once upon")
    assert "text" not in server.requests[0]
    assert got.finish.prompt_tokens == 2


async def test_logprobs_are_delivered_once_each(server: SGLangServer) -> None:
    seen: list[list[object]] = []
    backend = backend_for(server, return_logprob=True, on_logprobs=lambda rid, entries: seen.extend(entries))
    await collect(backend, make_request("Once", max_tokens=6))
    assert server.requests[0]["return_logprob"] is True
    assert len(seen) == 6 and all(len(e) == 3 for e in seen)


async def test_context_window(server: SGLangServer) -> None:
    server.context_length = 8
    backend = backend_for(server)
    assert await backend.context_window() == 8
    with pytest.raises(ContextWindowExceeded):
        await collect(backend, make_request("a b c", max_tokens=6))


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_fault_scenarios_lose_no_token(server: SGLangServer, scenario: str) -> None:
    backend = backend_for(server)
    expected = (await collect(backend, make_request("Once upon", max_tokens=40))).text
    server.requests.clear()
    outcome = await run_scenario(scenario, server, backend, expected)
    assert outcome.error is None
    assert outcome.same_text and outcome.lost == 0 and outcome.duplicated == 0
    for body in server.requests:
        done = len(body["text"].split()) - 2
        assert body["sampling_params"]["max_new_tokens"] == 40 - done
    assert len({b["rid"] for b in server.requests}) == 1


async def test_retries_exhausted(server: SGLangServer) -> None:
    server.faults.extend(Fault("status", status=502) for _ in range(5))
    with pytest.raises(ServerError) as info:
        await collect(
            backend_for(server, retry=RetryPolicy(initial_delay=0.01, max_retries=1)), make_request()
        )
    assert info.value.attempts == 2  # type: ignore[attr-defined]
