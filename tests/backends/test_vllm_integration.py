"""The OpenAI backend against a real vLLM CPU server (started by `.ci/vllm.sh`).

Skipped, loudly, when ``SPAWNJOIN_VLLM_URL`` is unset; with ``SPAWNJOIN_REQUIRE_VLLM=1`` (CI) they fail instead.
The served model is the tiny random Llama of ``tests/fixtures/tiny_hf_model.py`` (character-level tokenizer).
"""

from __future__ import annotations

import asyncio
import os
import re
from urllib.parse import urlsplit

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


async def _engine_gauge(name: str) -> float:
    """A vLLM metric from /metrics (summed over its labels), e.g. `num_requests_running`."""
    import httpx

    async with httpx.AsyncClient(timeout=30) as client:  # generous: CI machines can be busy
        metrics = (await client.get((URL or "").removesuffix("/v1") + "/metrics")).text
    lines = [line for line in metrics.splitlines() if line.startswith(f"vllm:{name}{{")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


async def _until_running(count: int, seconds: float) -> bool:
    for _ in range(int(seconds * 10)):
        if await _engine_gauge("num_requests_running") == count:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_cancelling_the_consumer_aborts_on_the_engine(vllm: OpenAICompletions) -> None:
    # Earlier tests' cut streams can leave requests generating for a moment: start from an idle engine, so the
    # running gauge counts this request alone. (vLLM 0.32 does not count aborts in request_success_total.)
    assert await _until_running(0, 120), (
        f"engine not idle: {await _engine_gauge('num_requests_running')} running"
    )
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in vllm.stream(make_request("x", max_tokens=WINDOW - 64)):
            first.set()
            await asyncio.sleep(0.05)  # a slow consumer keeps the request running on the engine

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), timeout=60)
    # 16k tokens take the tiny model over a minute: it is still generating when the cancel lands. The
    # waits are long for busy CI machines; a request that is not aborted runs far longer than 30 s.
    assert await _until_running(1, 30), f"{await _engine_gauge('num_requests_running')} running, expected 1"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _until_running(0, 30), "vLLM kept generating after the consumer was cancelled"


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
