"""The OpenAI-compatible completions backend against a real HTTP fault-injecting server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time

import pytest

from spawnjoin._exceptions import ConfigError, ConnectError, ContextWindowExceeded, ModelNotFound, ServerError
from spawnjoin.backends._limits import Limiter
from spawnjoin.backends._retry import RetryPolicy
from spawnjoin.backends.openai import OpenAICompletions, parse_retry_after
from tests.servers import Fault, FaultServer
from tests.servers.helpers import collect, make_request
from tests.servers.scenarios import OPENAI_ONLY, SCENARIOS, run_scenario

FAST = RetryPolicy(initial_delay=0.05, max_delay=0.2, max_retries=5)


@pytest.fixture
def server():
    with FaultServer() as srv:
        yield srv


def backend_for(server: FaultServer, **kwargs) -> OpenAICompletions:
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("read_timeout", 0.8)  # below the 1 s stall fault, above scheduling noise
    return OpenAICompletions(server.url + "/v1", **kwargs)


async def test_streams_text_and_exact_token_counts(server: FaultServer) -> None:
    async with backend_for(server) as backend:
        got = await collect(backend, make_request("Once upon", max_tokens=12))
    assert got.finish.reason == "length"
    assert got.finish.completion_tokens == 12 == got.chunk_tokens
    assert got.finish.prompt_tokens == 2
    body = server.completions()[0]
    assert body["model"] == "toy"  # model=None resolved through /v1/models
    assert body["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    assert server.requests[0]["headers"]["x-request-id"].startswith("req-")


async def test_counts_chunks_when_the_server_sends_no_usage(server: FaultServer) -> None:
    server.flavor = "other"  # not vLLM: no continuous usage asked for
    async with backend_for(server) as backend:
        got = await collect(backend, make_request("Once", max_tokens=5))
    assert got.chunk_tokens == 5 and got.finish.completion_tokens == 5
    assert "continuous_usage_stats" not in server.completions()[0]["stream_options"]


async def test_bare_host_gets_v1_and_env_vars_are_used(server: FaultServer, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-key-1234")
    backend = OpenAICompletions(retry=FAST)
    assert backend.base_url == server.url + "/v1"
    assert "secret" not in repr(backend) and "1234" in repr(backend)
    assert (await collect(backend, make_request(max_tokens=3))).finish.completion_tokens == 3
    assert server.requests[0]["headers"]["authorization"] == "Bearer sk-secret-key-1234"
    await backend.aclose()


def test_missing_base_url_is_a_config_error(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError, match="base_url"):
        OpenAICompletions()


async def test_several_models_need_a_choice() -> None:
    with FaultServer(models=("a", "b")) as srv:
        backend = backend_for(srv)
        with pytest.raises(ConfigError, match="a, b"):
            await collect(backend, make_request())


async def test_unknown_model_lists_the_served_ones(server: FaultServer) -> None:
    backend = backend_for(server, model="gpt-9")
    with pytest.raises(ModelNotFound, match="toy") as info:
        await collect(backend, make_request())
    assert info.value.status == 404 and len(server.completions()) == 1  # not retried


async def test_context_window_and_tokenizer(server: FaultServer) -> None:
    server.max_model_len = 10
    backend = backend_for(server)
    assert await backend.context_window() == 10
    assert await backend.count_tokens("one two three") == 3
    assert backend.capabilities.tokenizer
    with pytest.raises(ContextWindowExceeded, match="maximum context length"):
        await collect(backend, make_request("a b c d", max_tokens=8))


async def test_tokenize_retries_server_errors(server: FaultServer) -> None:
    server.tokenize_faults.extend([503, 502])
    backend = backend_for(server)
    assert await backend.count_tokens("one two three") == 3  # third attempt
    assert not server.tokenize_faults
    server.tokenize_faults.extend([500] * 10)
    with pytest.raises(ServerError):  # FAST allows a few retries, then the error surfaces
        await backend_for(server).count_tokens("one two")


async def test_count_tokens_is_none_without_tokenize_endpoint() -> None:
    with FaultServer() as srv:
        srv.tokenize = False
        backend = backend_for(srv, context_window=77)
        assert await backend.context_window() == 77
        assert await backend.count_tokens("a b") is None
        assert await backend.count_tokens("a b") is None
        assert not backend.capabilities.tokenizer
    backend = OpenAICompletions("http://127.0.0.1:9/v1", retry=RetryPolicy(max_retries=0))
    with pytest.raises(ConnectError):
        await backend.count_tokens("x")


@pytest.mark.parametrize("flavor", ["vllm", "sglang"])
async def test_matched_stop_is_reported(server: FaultServer, flavor: str) -> None:
    server.flavor = flavor
    backend = backend_for(server)
    full = (await collect(backend, make_request("Once upon", max_tokens=20))).text
    stop = full.split(" ")[5]
    got = await collect(backend, make_request("Once upon", max_tokens=20, stop=("zzz", " " + stop)))
    assert got.text == full[: full.index(" " + stop)]
    assert got.finish.reason == "stop" and got.finish.matched_stop == " " + stop


async def test_eos_with_stop_strings_is_eos() -> None:
    with FaultServer(eos_every=7) as srv:
        got = await collect(backend_for(srv), make_request("Once upon", max_tokens=200, stop=("zzz",)))
    assert got.finish.reason == "eos" and got.finish.matched_stop is None


async def test_server_without_stop_info_single_stop_rule(server: FaultServer) -> None:
    backend = backend_for(server)
    full = (await collect(backend, make_request("Once upon", max_tokens=20))).text
    stop = " " + full.split(" ")[4]

    original = backend._matched

    def strip(choice, request):  # a server that sends neither matched_stop nor stop_reason
        (choice.model_extra or {}).pop("stop_reason", None)
        return original(choice, request)

    backend._matched = strip  # type: ignore[method-assign]
    got = await collect(backend, make_request("Once upon", max_tokens=20, stop=(stop,)))
    assert got.finish.matched_stop == stop
    got = await collect(backend, make_request("Once upon", max_tokens=20, stop=(stop, "zzz")))
    assert got.finish.reason == "eos" and got.finish.matched_stop is None


@pytest.mark.parametrize("scenario", [*SCENARIOS, *OPENAI_ONLY])
async def test_fault_scenarios_lose_no_token(server: FaultServer, scenario: str) -> None:
    backend = backend_for(server)
    expected = (await collect(backend, make_request("Once upon", max_tokens=40))).text
    server.requests.clear()
    outcome = await run_scenario(scenario, server, backend, expected)
    assert outcome.error is None
    assert outcome.same_text and outcome.lost == 0 and outcome.duplicated == 0
    bodies = server.completions()
    # Every attempt resumed exactly where the previous one stopped, with the budget reduced to match.
    for body in bodies:
        assert body["prompt"].startswith("Once upon")
        done = len(body["prompt"].split()) - 2
        assert body["max_tokens"] == 40 - done
    assert len({r["headers"]["x-request-id"] for r in server.requests}) == 1


async def test_retry_after_is_waited(server: FaultServer) -> None:
    server.faults.append(Fault("status", status=429, retry_after="0.4"))
    start = time.monotonic()
    await collect(backend_for(server), make_request(max_tokens=3))
    assert time.monotonic() - start >= 0.4


async def test_retries_exhausted_is_a_clear_error(server: FaultServer) -> None:
    server.faults.extend(Fault("status", status=500) for _ in range(10))
    with pytest.raises(ServerError, match="500") as info:
        await collect(
            backend_for(server, retry=RetryPolicy(initial_delay=0.01, max_retries=2)), make_request()
        )
    assert info.value.attempts == 3  # type: ignore[attr-defined]
    assert len(server.completions()) == 3


async def test_dead_server_is_a_connect_error() -> None:
    backend = OpenAICompletions(
        "http://127.0.0.1:9/v1", model="m", retry=RetryPolicy(initial_delay=0.01, max_retries=1)
    )
    with pytest.raises(ConnectError, match="cannot reach"):
        await collect(backend, make_request())


async def test_overall_deadline(server: FaultServer) -> None:
    server.faults.extend(Fault("stall", after=2, seconds=5) for _ in range(3))
    backend = backend_for(server, timeout=0.5, read_timeout=10)
    start = time.monotonic()
    with pytest.raises(Exception, match="deadline"):
        await collect(backend, make_request(max_tokens=10))
    assert time.monotonic() - start < 2


async def test_concurrency_cap_and_rate(server: FaultServer) -> None:
    server.chunk_delay = 0.005
    backend = backend_for(server, max_concurrency=2, requests_per_second=50)
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, backend._limiter.in_flight)
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    results = await asyncio.gather(*(collect(backend, make_request(f"p{i}", max_tokens=5)) for i in range(6)))
    watcher.cancel()
    assert all(r.finish.completion_tokens == 5 for r in results)
    assert peak == 2


async def test_limiter_paces_starts() -> None:
    limiter = Limiter(requests_per_second=20)
    start = time.monotonic()
    for _ in range(4):
        async with limiter.slot():
            pass
    assert time.monotonic() - start >= 0.14


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470.0) == 10.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None
