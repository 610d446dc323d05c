"""The chat-completions backend against the fault-injecting HTTP server's chat endpoint on 127.0.0.1.

The server renders messages with the tiny vLLM model's template (``<|role|>\\ncontent</s>\\n``) and generates
with the toy model, a pure function of the rendered text: a chat reply must equal the text completion of the
prompt the server rendered, which makes continuation and resume checkable to the token.
"""

from __future__ import annotations

import asyncio
import time

import pytest

import spawnjoin
from spawnjoin._exceptions import (
    BackendError,
    ConfigError,
    ContextWindowExceeded,
    ModelNotFound,
)
from spawnjoin.backends._retry import RetryPolicy
from spawnjoin.backends.openai import OpenAICompletions
from spawnjoin.backends.openai_chat import OpenAIChat
from spawnjoin.conversation import ChatMessage, render_chatml
from spawnjoin.dialects.prompted import DEFAULT_CHILD_SYSTEM_PROMPT, PromptedDialect
from tests.servers import Fault, FaultServer
from tests.servers.helpers import collect, make_request
from tests.servers.scenarios import OPENAI_ONLY, SCENARIOS, run_scenario
from tests.servers.toy_model import ToyModel, tokenize

FAST = RetryPolicy(initial_delay=0.05, max_delay=0.2, max_retries=5)
CONTEXT = render_chatml(
    [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Once upon")]
)
RENDERED = "<|system|>\nBe brief.</s>\n<|user|>\nOnce upon</s>\n<|assistant|>\n"


@pytest.fixture
def server():
    with FaultServer() as srv:
        yield srv


def chat_for(server: FaultServer, **kwargs) -> OpenAIChat:
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("read_timeout", 0.8)  # below the 1 s stall fault, above scheduling noise
    return OpenAIChat(server.url + "/v1", **kwargs)


async def completion_of(server: FaultServer, prompt: str, max_tokens: int) -> str:
    """The text completion of `prompt` from the same server and model."""
    async with OpenAICompletions(server.url + "/v1", retry=FAST) as plain:
        return (await collect(plain, make_request(prompt, max_tokens=max_tokens))).text


async def test_streams_messages_with_exact_token_counts(server: FaultServer) -> None:
    async with chat_for(server) as backend:
        got = await collect(backend, make_request(CONTEXT, max_tokens=12))
    assert got.finish.reason == "length"
    assert got.finish.completion_tokens == 12 == got.chunk_tokens
    assert got.finish.prompt_tokens == len(tokenize(RENDERED))
    body = server.chats()[0]
    assert body["model"] == "toy"
    # The open empty assistant message is dropped: a plain generation with the template's own prompt.
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Once upon"},
    ]
    assert "continue_final_message" not in body and "add_generation_prompt" not in body
    assert body["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    assert server.requests[0]["headers"]["x-request-id"].startswith("req-")
    assert server.prompts() == [RENDERED]
    assert got.text == await completion_of(server, RENDERED, 12)
    assert repr(backend).startswith("OpenAIChat(base_url=")


async def test_open_assistant_message_is_continued(server: FaultServer) -> None:
    async with chat_for(server) as backend:
        got = await collect(backend, make_request(CONTEXT + "Let me think", max_tokens=10))
    body = server.chats()[0]
    assert body["messages"][-1] == {"role": "assistant", "content": "Let me think"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert server.prompts()[0] == RENDERED + "Let me think"
    assert got.text == await completion_of(server, RENDERED + "Let me think", 10)


async def test_whitespace_only_open_message_and_plain_prompts(server: FaultServer) -> None:
    async with chat_for(server) as backend:
        await collect(backend, make_request(CONTEXT + "\n", max_tokens=3))
        await collect(backend, make_request("Once upon", max_tokens=3))
    blank, plain = server.chats()
    assert [m["role"] for m in blank["messages"]] == ["system", "user"]
    assert "continue_final_message" not in blank
    assert plain["messages"] == [{"role": "user", "content": "Once upon"}]


async def test_hosted_api_refuses_to_continue_with_a_clear_error(server: FaultServer) -> None:
    server.flavor = "other"  # not vLLM or SGLang: continuation is off unless asked for
    async with chat_for(server) as backend:
        with pytest.raises(ConfigError, match='continuation="user_turn"'):
            await collect(backend, make_request(CONTEXT + "Let me think", max_tokens=3))
        assert server.chats() == []
        assert (await collect(backend, make_request(CONTEXT, max_tokens=3))).finish.completion_tokens == 3
    server.flavor = "vllm"
    with pytest.raises(ConfigError, match="continue_final_message"):
        await collect(
            chat_for(server, continue_final_message=False), make_request(CONTEXT + "Hi", max_tokens=3)
        )


async def test_continuation_can_be_forced_on_an_unknown_server(server: FaultServer) -> None:
    server.flavor = "other"
    async with chat_for(server, continue_final_message=True) as backend:
        await collect(backend, make_request(CONTEXT + "Let me think", max_tokens=3))
    assert server.chats()[0]["continue_final_message"] is True


@pytest.mark.parametrize("flavor", ["vllm", "sglang"])
async def test_matched_stop_is_reported(server: FaultServer, flavor: str) -> None:
    server.flavor = flavor
    backend = chat_for(server)
    full = (await collect(backend, make_request(CONTEXT, max_tokens=20))).text
    stop = " " + full.split(" ")[5]
    got = await collect(backend, make_request(CONTEXT, max_tokens=20, stop=("</spawn>", stop)))
    assert got.text == full[: full.index(stop)]
    assert got.finish.reason == "stop" and got.finish.matched_stop == stop
    assert server.chats()[-1]["stop"] == ["</spawn>", stop]


@pytest.mark.parametrize("scenario", [*SCENARIOS, *OPENAI_ONLY])
async def test_fault_scenarios_lose_no_token(server: FaultServer, scenario: str) -> None:
    backend = chat_for(server)
    expected = (await collect(backend, make_request("Once upon", max_tokens=40))).text
    server.requests.clear()
    outcome = await run_scenario(scenario, server, backend, expected)
    assert outcome.error is None
    assert outcome.same_text and outcome.lost == 0 and outcome.duplicated == 0
    # Every resumed attempt continued the open assistant message holding exactly the text received so far.
    for body in server.chats():
        received = body["messages"][-1]["content"] if body["messages"][-1]["role"] == "assistant" else ""
        assert expected.startswith(received)
        assert bool(received) == bool(body.get("continue_final_message"))
        assert body["max_tokens"] == 40 - len(tokenize(received))
    assert len({r["headers"]["x-request-id"] for r in server.requests}) == 1


async def test_resume_continues_the_partial_reply(server: FaultServer) -> None:
    backend = chat_for(server)
    expected = (await collect(backend, make_request(CONTEXT + "Well,", max_tokens=30))).text
    server.requests.clear()
    server.faults.append(Fault("drop", after=6))
    got = await collect(backend, make_request(CONTEXT + "Well,", max_tokens=30))
    assert got.text == expected and got.finish.completion_tokens == 30
    _, second = server.chats()
    received = second["messages"][-1]["content"].removeprefix("Well,")
    assert expected.startswith(received) and len(tokenize(received)) == 6
    assert second["continue_final_message"] is True and second["max_tokens"] == 30 - 6
    assert server.prompts()[1] == RENDERED + "Well," + received


async def test_without_continuation_a_broken_reply_is_not_resumed(server: FaultServer) -> None:
    server.flavor = "other"
    backend = chat_for(server)
    server.faults.append(Fault("drop", after=0))  # nothing received yet: retried as usual
    assert (await collect(backend, make_request(CONTEXT, max_tokens=8))).finish.completion_tokens == 8
    server.requests.clear()
    server.faults.append(Fault("drop", after=4))
    with pytest.raises(BackendError, match="cannot be resumed") as info:
        await collect(backend, make_request(CONTEXT, max_tokens=8))
    assert not info.value.retryable
    assert len(server.chats()) == 1


async def test_errors_map_as_for_completions(server: FaultServer) -> None:
    server.faults.append(Fault("status", status=429, retry_after="0.05"))
    assert (
        await collect(chat_for(server), make_request(CONTEXT, max_tokens=3))
    ).finish.completion_tokens == 3
    with pytest.raises(ModelNotFound, match="toy"):
        await collect(chat_for(server, model="gpt-9"), make_request(CONTEXT))
    server.max_model_len = 12
    with pytest.raises(ContextWindowExceeded, match="maximum context length"):
        await collect(chat_for(server), make_request(CONTEXT, max_tokens=8))
    with pytest.raises(ConfigError, match="unknown chat role"):
        await collect(chat_for(server), make_request("<|im_start|>tool\nx<|im_end|>\n"))


async def test_count_tokens_counts_the_rendered_prompt(server: FaultServer) -> None:
    backend = chat_for(server)
    assert await backend.count_tokens(CONTEXT) == len(tokenize(RENDERED))
    assert await backend.count_tokens(CONTEXT + "Let me think") == len(tokenize(RENDERED + "Let me think"))
    assert await backend.count_tokens("one two three") == 3
    got = await collect(backend, make_request(CONTEXT + "Let me think", max_tokens=2))
    assert got.finish.prompt_tokens == await backend.count_tokens(CONTEXT + "Let me think")
    assert backend.capabilities.tokenizer


class _Delegator(ToyModel):
    """Writes a prompted spawn block as the parent, then an answer after the join; children answer at once.

    A pure function of the rendered text, like the toy model it replaces, so resumes stay exact.
    """

    SPAWN = "I will split this.\n<spawn>\n<task>2+2</task>\n<task>3+3</task>\n</spawn>"

    def next_token(self, text: str) -> str | None:
        reply = text[text.rfind("<|assistant|>\n") + len("<|assistant|>\n") :]
        conversation = text[text.index("</s>\n") :]  # past the system prompt, which shows the tags
        if DEFAULT_CHILD_SYSTEM_PROMPT in text:
            script = "<answer>4</answer>"
        elif "</join>" in conversation:
            script, reply = "<answer>10</answer>", reply.rpartition("</join>\n")[2]
        else:
            script = self.SPAWN
        if not script.startswith(reply) or len(reply) >= len(script):
            return None  # end of sequence
        return tokenize(script[len(reply) :])[0]


@pytest.mark.parametrize(("continuation", "flavor"), [("continue", "vllm"), ("user_turn", "other")])
async def test_prompted_solve_spawns_children_over_chat(
    server: FaultServer, continuation: str, flavor: str
) -> None:
    server.model = _Delegator()
    server.flavor = flavor
    async with chat_for(server) as backend:
        result = await spawnjoin.solve(
            "What is (2+2)+(3+3)?", backend=backend, dialect=PromptedDialect(continuation=continuation)
        )
    assert result.status == "done", result.error
    assert result.answer == "10"
    trace = result.trace
    assert len(trace.threads) == 3 and trace.metrics.spawns == 1
    assert [t.result for t in trace.children_of(trace.root_id)] == ["4", "4"]
    final = server.chats()[-1]
    if continuation == "continue":
        assert final["continue_final_message"] is True
        assert final["messages"][-1]["role"] == "assistant" and "</join>" in final["messages"][-1]["content"]
    else:
        assert "continue_final_message" not in final
        assert final["messages"][-1]["role"] == "user" and "<join>" in final["messages"][-1]["content"]


async def test_tokenize_calls_share_the_concurrency_cap(server: FaultServer) -> None:
    server.chunk_delay = 0.02
    async with chat_for(server, max_concurrency=1) as backend:
        assert await backend.count_tokens(CONTEXT) is not None  # discovery out of the way
        stream = asyncio.create_task(collect(backend, make_request(CONTEXT, max_tokens=15)))
        await asyncio.sleep(0.1)  # the stream holds the only slot now
        start = time.monotonic()
        assert await backend.count_tokens(CONTEXT + "Let me think") is not None
        waited = time.monotonic() - start
        assert stream.done() and waited >= 0.1, "the /tokenize call waited for the stream's slot"
