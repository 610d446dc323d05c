"""The OpenAI backend against a real vLLM CPU server (started by `.ci/vllm.sh`).

Skipped, loudly, when ``SPAWNJOIN_VLLM_URL`` is unset; with ``SPAWNJOIN_REQUIRE_VLLM=1`` (CI) they fail instead.
The served model is the tiny random Llama of ``tests/fixtures/tiny_hf_model.py`` (character-level tokenizer).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import pytest

import spawnjoin
from spawnjoin._exceptions import ContextWindowExceeded, ModelNotFound
from spawnjoin.backends._retry import RetryPolicy
from spawnjoin.backends.base import Backend, GenerationRequest
from spawnjoin.backends.multi import MultiBackend
from spawnjoin.backends.openai import OpenAICompletions
from spawnjoin.backends.openai_chat import OpenAIChat
from spawnjoin.budget import Budget
from spawnjoin.conversation import IM_END, ChatMessage, render_chatml
from spawnjoin.dialects.prompted import DEFAULT_CHILD_SYSTEM_PROMPT, PromptedDialect
from tests.servers.helpers import collect, make_request
from tests.servers.proxy import DroppingProxy

pytestmark = pytest.mark.vllm

URL = os.environ.get("SPAWNJOIN_VLLM_URL")
MODEL = os.environ.get("SPAWNJOIN_VLLM_MODEL")
REQUIRED = os.environ.get("SPAWNJOIN_REQUIRE_VLLM") == "1"
WHY = (
    "!!! vLLM INTEGRATION TESTS NOT RUN: SPAWNJOIN_VLLM_URL is unset. "
    "Run `source .ci/vllm.sh` first (or set SPAWNJOIN_VLLM_URL / SPAWNJOIN_VLLM_MODEL). !!!"
)
if not URL and not REQUIRED:
    pytest.skip(WHY, allow_module_level=True)

NO_EOS = {"ignore_eos": True}
WINDOW = 16384  # the served window (.ci/vllm.sh --max-model-len; the fixture's max_position_embeddings)
PROMPTS = [
    "The quick brown fox",
    "Countdown: 3 7 25 50 -> 100",
    "<Parallel>",
    "def solve(x):",
    "Hello",
    "1 2 3",
]


@pytest.fixture
async def vllm():
    if not URL:
        pytest.fail(WHY + " (SPAWNJOIN_REQUIRE_VLLM=1: CI could not start vLLM; see the .ci/vllm.sh output)")
    backend = OpenAICompletions(URL, MODEL, extra_body=NO_EOS, retry=RetryPolicy(initial_delay=0.1))
    yield backend
    await backend.aclose()


async def _whole(backend: OpenAICompletions, prompt: str, max_tokens: int, **extra: object) -> str:
    """The same request without streaming, straight through the openai client."""
    body = {**NO_EOS, **extra}
    reply = await backend._client.completions.create(
        model=await backend._model(), prompt=prompt, max_tokens=max_tokens, temperature=0, extra_body=body
    )
    return reply.choices[0].text


async def test_streaming_matches_the_whole_completion_in_order(vllm: OpenAICompletions) -> None:
    got = await collect(vllm, make_request(PROMPTS[0], max_tokens=48))
    assert len(got.chunks) > 10, "tokens arrive one by one"
    assert got.text == await _whole(vllm, PROMPTS[0], 48)
    assert got.finish.reason == "length"


async def test_stop_string_is_cut_and_reported(vllm: OpenAICompletions) -> None:
    full = (await collect(vllm, make_request(PROMPTS[1], max_tokens=60))).text
    stop = full[20:24]
    assert stop, full
    got = await collect(vllm, make_request(PROMPTS[1], max_tokens=60, stop=("\x00never", stop)))
    assert got.text == full[: full.index(stop)]
    assert got.finish.reason == "stop" and got.finish.matched_stop == stop
    # The runtime re-appends the matched stop: text + stop is a prefix of the unstopped output.
    assert full.startswith(got.text + stop)


async def test_token_ids_are_the_generated_tokens(vllm: OpenAICompletions) -> None:
    with_ids = OpenAICompletions(URL, MODEL, extra_body=NO_EOS, return_token_ids=True)
    try:
        plain = await collect(vllm, make_request(PROMPTS[1], max_tokens=60))
        assert plain.finish.token_ids is None  # only asked for
        full = await collect(with_ids, make_request(PROMPTS[1], max_tokens=60))
        assert full.text == plain.text
        assert full.finish.token_ids is not None and len(full.finish.token_ids) == 60
        stop = full.text[20:24]
        cut = await collect(with_ids, make_request(PROMPTS[1], max_tokens=60, stop=(stop,)))
        ids = list(cut.finish.token_ids or ())
        # the greedy tokens up to and including the one that completed the stop string
        assert ids and len(ids) == cut.finish.completion_tokens and ids == list(full.finish.token_ids)[: len(ids)]
        data = await with_ids._client.post(
            (URL or "").removesuffix("/v1") + "/detokenize", cast_to=object, body={"model": MODEL, "tokens": ids}
        )
        assert data["prompt"].startswith(cut.text + stop)  # type: ignore[index]
    finally:
        await with_ids.aclose()


async def test_token_accounting_matches_tokenize(vllm: OpenAICompletions) -> None:
    assert await vllm.context_window() == WINDOW
    for prompt in PROMPTS[:3]:
        got = await collect(vllm, make_request(prompt, max_tokens=40))
        assert got.finish.completion_tokens == 40 == got.chunk_tokens
        assert await vllm.count_tokens(got.text) == 40
        assert got.finish.prompt_tokens == await vllm.count_tokens(prompt)
    assert vllm.capabilities.tokenizer


async def test_concurrent_requests_equal_sequential_ones(vllm: OpenAICompletions) -> None:
    sequential = [(await collect(vllm, make_request(p, max_tokens=32))).text for p in PROMPTS]
    together = await asyncio.gather(*(collect(vllm, make_request(p, max_tokens=32)) for p in PROMPTS))
    assert [g.text for g in together] == sequential


async def test_errors_from_the_real_server(vllm: OpenAICompletions) -> None:
    # vLLM 0.32 rejects a prompt that fills the window (older versions also rejected prompt + max_tokens
    # beyond it; 0.32 shortens max_tokens instead).
    with pytest.raises(ContextWindowExceeded, match="maximum context length"):
        await collect(vllm, make_request("x" * (WINDOW + 52), max_tokens=5))
    clamped = await collect(vllm, make_request("x" * (WINDOW - 8), max_tokens=50))
    assert clamped.finish.reason == "length" and clamped.finish.completion_tokens == 8
    wrong = OpenAICompletions(URL, "no-such-model")
    with pytest.raises(ModelNotFound, match=MODEL or "served"):
        await collect(wrong, make_request())
    await wrong.aclose()


async def test_stream_cut_by_a_proxy_resumes_without_loss(vllm: OpenAICompletions) -> None:
    expected = (await collect(vllm, make_request(PROMPTS[3], max_tokens=64))).text
    host, port = urlsplit(URL).hostname, urlsplit(URL).port
    async with DroppingProxy(host or "127.0.0.1", port or 80) as proxy:
        backend = OpenAICompletions(
            proxy.url + "/v1", MODEL, extra_body=NO_EOS, retry=RetryPolicy(initial_delay=0.05)
        )
        await backend.context_window()  # discovery first, so the cuts hit the completion streams
        proxy.cuts.extend([1500, 0, 2500])  # mid-stream, before any byte, mid-stream again
        got = await collect(backend, make_request(PROMPTS[3], max_tokens=64))
        await backend.aclose()
    assert got.text == expected
    assert got.finish.completion_tokens == 64


async def test_multi_backend_skips_a_dead_endpoint(vllm: OpenAICompletions) -> None:
    multi = MultiBackend.from_urls(["http://127.0.0.1:9/v1", URL], model=MODEL, extra_body=NO_EOS)
    results = await asyncio.gather(*(collect(multi, make_request(p, max_tokens=16)) for p in PROMPTS[:4]))
    assert all(r.finish.completion_tokens == 16 for r in results)
    assert multi.statistics()[0].down and multi.statistics()[1].served == 4
    await multi.aclose()


class _Constrained(Backend):
    """Routes each call to a vLLM backend whose structured-output regex fits the thread's place.

    A random model never writes spawn syntax; vLLM's regex-constrained decoding makes it write a well-formed
    ThreadWeaver block, so the real scheduler, dialect and engine run a genuine multi-thread solve.
    """

    name = "vllm-constrained"

    def __init__(self, url: str, model: str | None) -> None:
        word = "[a-z]{2,6}"
        regex = {
            "root": rf"<Parallel>\n<Outlines>\n<Outline>1: {word}</Outline>\n<Outline>2: {word}</Outline>\n</Outlines>",
            "child": rf" {word} {word}</Thread>",
            "end": rf"<Conclusion>{word}</Conclusion>",
        }
        self.parts = {
            k: OpenAICompletions(url, model, extra_body={"structured_outputs": {"regex": r}})
            for k, r in regex.items()
        }
        self.calls: list[str] = []

    async def stream(self, request: GenerationRequest):
        prompt = request.prompt
        if prompt.rfind("<Thread>") > prompt.rfind("</Thread>"):
            part = "child"
        elif "</Parallel>" in prompt:
            part = "end"
        else:
            part = "root"
        self.calls.append(part)
        async for item in self.parts[part].stream(request):
            yield item

    async def context_window(self) -> int | None:
        return await self.parts["root"].context_window()

    async def aclose(self) -> None:
        for part in self.parts.values():
            await part.aclose()


async def test_threadweaver_solve_spawns_threads_on_vllm(vllm: OpenAICompletions) -> None:
    backend = _Constrained(URL or "", MODEL)
    result = await spawnjoin.solve(
        "Reach 24 with 4 6 9 3.\n",
        backend=backend,
        dialect="threadweaver",
        budget=Budget(max_tokens_per_call=120, deadline=120),
    )
    await backend.aclose()
    assert result.status == "done", result.error
    assert sorted(backend.calls) == ["child", "child", "end", "root"]
    assert result.text.count("<Thread>") == 2 and "</Parallel>" in result.text
    assert "<Conclusion>" in result.text
    trace = result.trace
    assert len(trace.threads) == 3 and len(trace.children_of(trace.root_id)) == 2
    assert trace.metrics.spawns == 1


async def test_shared_prefix_reports_cached_tokens(vllm: OpenAICompletions) -> None:
    prefix = "A long shared prefix for sibling threads, " * 4
    await collect(vllm, make_request(prefix + "first", max_tokens=4))
    again = await collect(vllm, make_request(prefix + "second", max_tokens=4))
    assert again.finish.cached_tokens is not None and again.finish.cached_tokens >= 16
    assert vllm.capabilities.prefix_cache


async def _engine_metrics(client: httpx.AsyncClient) -> str:
    """vLLM's Prometheus text from /metrics."""
    return (await client.get((URL or "").removesuffix("/v1") + "/metrics")).text


def _metric(metrics: str, name: str, label: str = "") -> float:
    """`vllm:<name>` summed over its series whose labels contain `label`, e.g. `finished_reason="length"`."""
    lines = [line for line in metrics.splitlines() if line.startswith(f"vllm:{name}{{") and label in line]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


async def _until_idle(client: httpx.AsyncClient, seconds: float) -> bool:
    """Whether the engine is left with no running or waiting request within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        metrics = await _engine_metrics(client)
        if _metric(metrics, "num_requests_running") + _metric(metrics, "num_requests_waiting") == 0:
            return True
        await asyncio.sleep(0.1)
    return False


class _Stalls:
    """Watches the longest time this event loop went without a turn: this process got no CPU."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._last = time.monotonic()
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            self._turn()

    def _turn(self) -> None:
        now = time.monotonic()
        self.longest = max(self.longest, now - self._last - 0.01)
        self._last = now

    def stop(self) -> float:
        """The longest stall so far, the current one included."""
        self._turn()
        self._task.cancel()
        return self.longest


@dataclass
class _Cancelled:
    """A request whose consumer was cancelled at its first chunk, as the engine's counters saw it."""

    finished: float  # requests that ended with reason "length" meanwhile
    generated: float  # tokens generated meanwhile
    cancelled_at: float  # seconds from sending the request to cancelling its consumer
    stall: float  # the longest time this process got no CPU, from sending to the stream's close

    def __str__(self) -> str:
        return (
            f"{self.finished:.0f} request(s) finished, {self.generated:.0f} tokens generated, consumer "
            f"cancelled {self.cancelled_at:.2f} s after sending, this process stalled up to {self.stall:.2f} s"
        )


async def _cancel_at_the_first_chunk(
    vllm: OpenAICompletions, client: httpx.AsyncClient, max_tokens: int
) -> _Cancelled:
    # Earlier tests (and attempts) can leave a request generating: start from an idle engine, so the
    # counters' changes are this request's alone.
    assert await _until_idle(client, 600), "engine not idle"
    # vLLM's EngineCore and Worker keep busy-polling for 1 s after their last step (shm_broadcast's
    # busy_loop_s): a request sent into that would find this process starved from its start.
    await asyncio.sleep(1.5)
    before = await _engine_metrics(client)
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in vllm.stream(make_request("x", max_tokens=max_tokens)):
            first.set()
            await asyncio.sleep(0.05)  # a slow consumer: the engine runs ahead of it

    stalls = _Stalls()
    start = time.monotonic()
    task = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(first.wait(), timeout=300)
        task.cancel()  # at once: a /metrics round trip here could outlast the whole generation
        cancelled_at = time.monotonic() - start
        with pytest.raises(asyncio.CancelledError):
            await task
        # The event loop closes the abandoned stream (asyncio finalizes the async generator) before anything
        # else runs here: on a starved machine any other work first could delay it past the request's end.
        await asyncio.sleep(0.1)
        stall = stalls.stop()
        # A request that is not aborted runs to its end: a slow machine needs minutes for 16k tokens.
        assert await _until_idle(client, 600), "vLLM still generating 10 minutes after the cancel"
    finally:
        task.cancel()
        stalls.stop()
    after = await _engine_metrics(client)

    def delta(name: str, label: str = "") -> float:
        return _metric(after, name, label) - _metric(before, name, label)

    finished = delta("request_success_total", 'finished_reason="length"')
    return _Cancelled(finished, delta("generation_tokens_total"), cancelled_at, stall)


ABORT_ATTEMPTS = 8
STALL = 1.0  # seconds without a turn of this process's event loop: the request may have ended unseen


async def test_cancelling_the_consumer_aborts_on_the_engine(vllm: OpenAICompletions) -> None:
    """Cancelling the consumer closes the HTTP stream at once, and vLLM aborts the request.

    Judged by the engine's counters once it is idle again, not by racing the request's end (16k tokens take
    ~17 s on a fast CPU): the fixture model never stops before max_tokens (greedy, no EOS), so a request that
    ran on ends with reason "length" after all max_tokens; an aborted one is not counted in
    request_success_total (vLLM 0.32 counts no aborts there) and generates fewer tokens.

    On a machine with few cores, vLLM CPU's busy polling (its EngineCore and Worker spin on sched_yield) can
    keep this process off the CPU for most of a generation, so its first chunk, the cancel or the close of the
    stream may come only after the request ended. Such an attempt shows nothing and is repeated; one that ran
    from sending the request to closing the stream without a stall must abort. A backend that does not close
    the stream never produces an aborted attempt.
    """
    max_tokens = WINDOW - 64
    await vllm.context_window()  # server discovery first: the request goes out at once
    stalled: list[str] = []
    async with httpx.AsyncClient(timeout=30) as client:  # generous: CI machines can be busy
        for _ in range(ABORT_ATTEMPTS):
            got = await _cancel_at_the_first_chunk(vllm, client, max_tokens)
            if got.finished == 0:
                assert 0 < got.generated < max_tokens, f"aborted, yet: {got}"
                return
            assert got.finished == 1 and got.generated == max_tokens, f"not this request alone: {got}"
            assert got.stall >= STALL, f"vLLM ran on after the consumer was cancelled: {got}"
            stalled.append(str(got))
    pytest.fail(f"every attempt stalled (this process got no CPU while vLLM generated): {'; '.join(stalled)}")


# -- OpenAIChat against vLLM's chat endpoint ------------------------------------------------------------
# The tiny model's chat template renders `<|role|>\ncontent</s>\n` per message (ChatML-like, with `</s>` as
# the end of turn), then `<|assistant|>\n`. Its tokenizer is character-level, so a rendered prompt's token
# strings joined are the prompt itself, and prompt token counts are its length.

CHAT_MESSAGES = [
    ChatMessage(role="system", content="Be brief."),
    ChatMessage(role="user", content="Reach 24."),
]
CHAT_CONTEXT = render_chatml(CHAT_MESSAGES)
CHAT_RENDERED = "<|system|>\nBe brief.</s>\n<|user|>\nReach 24.</s>\n<|assistant|>\n"


def _tokens(rendered: str) -> int:
    """Tokens of a rendered prompt: one per character, and `</s>` is one special token."""
    return len(rendered.replace("</s>", "\x00"))


@pytest.fixture
async def vllm_chat():
    if not URL:
        pytest.fail(WHY + " (SPAWNJOIN_REQUIRE_VLLM=1: CI could not start vLLM; see the .ci/vllm.sh output)")
    backend = OpenAIChat(URL, MODEL, extra_body=NO_EOS, retry=RetryPolicy(initial_delay=0.1))
    yield backend
    await backend.aclose()


async def _server_rendering(backend: OpenAIChat, open_text: str | None) -> str:
    """The prompt vLLM renders for CHAT_MESSAGES (plus an open assistant message), from ``/tokenize``."""
    messages = [m.model_dump() for m in CHAT_MESSAGES]
    if open_text is not None:
        messages.append({"role": "assistant", "content": open_text})
    body = {
        "model": MODEL,
        "messages": messages,
        "add_generation_prompt": open_text is None,
        "continue_final_message": open_text is not None,
        "return_token_strs": True,
    }
    data = await backend._client.post(
        (URL or "").removesuffix("/v1") + "/tokenize", cast_to=object, body=body
    )
    return "".join(data["token_strs"])  # type: ignore[index]


async def test_chat_template_renders_chatml_like_prompts(vllm_chat: OpenAIChat) -> None:
    assert await _server_rendering(vllm_chat, None) == CHAT_RENDERED
    # continue_final_message leaves the last assistant message open: no `</s>`, no new generation prompt.
    assert await _server_rendering(vllm_chat, "Let me think") == CHAT_RENDERED + "Let me think"


async def test_chat_streams_the_reply_with_exact_token_counts(vllm_chat: OpenAIChat) -> None:
    got = await collect(vllm_chat, make_request(CHAT_CONTEXT, max_tokens=40))
    assert len(got.chunks) > 10, "tokens arrive one by one"
    assert got.finish.reason == "length"
    assert got.finish.completion_tokens == 40 == got.chunk_tokens
    assert got.finish.prompt_tokens == _tokens(CHAT_RENDERED) == await vllm_chat.count_tokens(CHAT_CONTEXT)
    whole = await vllm_chat._client.chat.completions.create(
        model=MODEL or "",
        messages=[m.model_dump() for m in CHAT_MESSAGES],  # type: ignore[misc]
        max_tokens=40,
        temperature=0,
        extra_body=NO_EOS,
    )
    assert got.text == whole.choices[0].message.content
    # The chat reply is the text completion of the prompt the template rendered.
    assert got.text == await _whole(vllm_chat, CHAT_RENDERED, 40)


async def test_chat_stops_at_spawn_close_and_reports_it(vllm_chat: OpenAIChat) -> None:
    full = (await collect(vllm_chat, make_request(CHAT_CONTEXT, max_tokens=60))).text
    stop = full[20:24]
    got = await collect(vllm_chat, make_request(CHAT_CONTEXT, max_tokens=60, stop=("</spawn>", stop)))
    assert got.text == full[: full.index(stop)]
    assert got.finish.reason == "stop" and got.finish.matched_stop == stop
    # The prompted dialect's stop: structured outputs make the random model write `</spawn>`.
    spawning = OpenAIChat(
        URL, MODEL, extra_body={"structured_outputs": {"regex": r"[a-z]{4}</spawn>[a-z]{9}"}}
    )
    got = await collect(spawning, make_request(CHAT_CONTEXT, max_tokens=30, stop=("</spawn>",)))
    await spawning.aclose()
    assert re.fullmatch("[a-z]{4}", got.text), got.text
    assert got.finish.reason == "stop" and got.finish.matched_stop == "</spawn>"


async def test_chat_continues_an_open_assistant_message(vllm_chat: OpenAIChat) -> None:
    got = await collect(vllm_chat, make_request(CHAT_CONTEXT + "Let me think", max_tokens=40))
    # Greedy continuation of the open message == the text completion of the rendered, still-open prompt.
    assert got.text == await _whole(vllm_chat, CHAT_RENDERED + "Let me think", 40)
    assert got.finish.prompt_tokens == _tokens(CHAT_RENDERED + "Let me think")
    assert got.finish.prompt_tokens == await vllm_chat.count_tokens(CHAT_CONTEXT + "Let me think")


async def test_chat_stream_cut_by_a_proxy_resumes_without_loss(vllm_chat: OpenAIChat) -> None:
    expected = (await collect(vllm_chat, make_request(CHAT_CONTEXT, max_tokens=64))).text
    host, port = urlsplit(URL).hostname, urlsplit(URL).port
    async with DroppingProxy(host or "127.0.0.1", port or 80) as proxy:
        backend = OpenAIChat(
            proxy.url + "/v1", MODEL, extra_body=NO_EOS, retry=RetryPolicy(initial_delay=0.05)
        )
        await backend.context_window()  # discovery first, so the cuts hit the chat streams
        proxy.cuts.extend([2500, 0, 4000])  # mid-stream, before any byte, mid-stream again
        got = await collect(backend, make_request(CHAT_CONTEXT, max_tokens=64))
        await backend.aclose()
    assert not proxy.cuts and proxy.connections >= 4, "every cut hit a chat request"
    # Each resume continued the open assistant message with the text received (continue_final_message).
    assert got.text == expected
    assert got.finish.completion_tokens == 64


class _ConstrainedChat(_Constrained):
    """`_Constrained` for the prompted dialect over vLLM's chat endpoint: the parent writes a spawn block,
    children and the parent after the join write an `<answer>`."""

    name = "vllm-chat-constrained"

    def __init__(self, url: str, model: str | None) -> None:
        word = "[a-z]{2,6}"
        regex = {
            "root": rf"<spawn>\n<task>{word}</task>\n<task>{word}</task>\n</spawn>",
            "child": rf"<answer>{word}</answer>",
            "end": rf"<answer>{word}</answer>",
        }
        self.parts = {
            k: OpenAIChat(url, model, extra_body={"structured_outputs": {"regex": r}})
            for k, r in regex.items()
        }
        self.calls: list[str] = []

    async def stream(self, request: GenerationRequest):
        prompt = request.prompt
        if DEFAULT_CHILD_SYSTEM_PROMPT in prompt:
            part = "child"
        elif "</join>" in prompt.split(IM_END, 1)[1]:  # past the system prompt, which shows the tags
            part = "end"
        else:
            part = "root"
        self.calls.append(part)
        async for item in self.parts[part].stream(request):
            yield item

    async def count_tokens(self, text: str) -> int | None:
        return await self.parts["root"].count_tokens(text)


@pytest.mark.parametrize("continuation", ["continue", "user_turn"])
async def test_prompted_solve_spawns_children_on_vllm_chat(vllm_chat: OpenAIChat, continuation: str) -> None:
    backend = _ConstrainedChat(URL or "", MODEL)
    result = await spawnjoin.solve(
        "Reach 24 with 4 6 9 3.",
        backend=backend,
        dialect=PromptedDialect(continuation=continuation),  # type: ignore[arg-type]
        budget=Budget(max_tokens_per_call=120, deadline=120),
    )
    assert result.status == "done", result.error
    assert sorted(backend.calls) == ["child", "child", "end", "root"]
    trace = result.trace
    assert len(trace.threads) == 3 and len(trace.children_of(trace.root_id)) == 2
    assert trace.metrics.spawns == 1
    assert all(re.fullmatch("[a-z]{2,6}", child.result or "") for child in trace.children_of(trace.root_id))
    assert re.fullmatch("[a-z]{2,6}", result.answer or ""), result.answer
    root = trace.threads[trace.root_id]
    spawn_call, final_call = root.calls
    assert spawn_call.matched_stop == "</spawn>" and spawn_call.text.endswith("</spawn>")
    if continuation == "continue":  # the join went into the open assistant message, continued by vLLM
        assert final_call.context.endswith("</join>\n")
    else:
        assert final_call.context.endswith("<|im_start|>assistant\n")
    # vLLM's prompt_tokens for every call equal /tokenize of the messages the backend sent.
    for thread in trace.threads.values():
        for call in thread.calls:
            assert call.prompt_tokens == await vllm_chat.count_tokens(call.context)
    await backend.aclose()
