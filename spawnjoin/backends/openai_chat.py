"""A backend for OpenAI-compatible chat completions (``/v1/chat/completions``): chat-only models, hosted APIs.

Thread contexts stay text: a chat thread's context is ChatML (`spawnjoin.conversation`), and each request's
prompt is parsed back into messages here. A final assistant message left open is *continued*: vLLM and
SGLang render it without its end-of-turn marker when asked with ``continue_final_message`` (and no generation
prompt), so the model goes on writing the same message. Hosted APIs cannot do that; there the prompted
dialect must hand results back as a new user turn (``PromptedDialect(continuation="user_turn")``).

Everything else is `OpenAICompletions`' own machinery, inherited rather than repeated: the error edge, the
retry loop with resume, request limits, token accounting from ``usage`` and the matched stop string. A resumed
attempt appends the text already received to the open assistant message and continues it, so on vLLM and
SGLang a broken stream loses nothing; without continuation a stream that broke after some text cannot be
resumed and fails with a clear, non-retryable error (one that broke before any text is retried as usual).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from spawnjoin._exceptions import BackendError, ConfigError
from spawnjoin.backends.base import Chunk, Finish, GenerationRequest
from spawnjoin.backends.openai import OpenAICompletions
from spawnjoin.conversation import ChatMessage, is_chatml, parse_chatml, render_chatml

__all__ = ["OpenAIChat"]

# Engines whose chat endpoint continues an open final assistant message (``owned_by`` in /v1/models).
_CONTINUING_ENGINES = ("vllm", "sglang")
_CONTINUE = {"continue_final_message": True, "add_generation_prompt": False}


class _Conversation:
    """A ChatML context as the chat endpoint receives it.

    Attributes:
        messages: The messages to send (an open *empty* assistant message is dropped: plain generation).
        continues: Whether the last message is an open, non-empty assistant message to continue.
    """

    __slots__ = ("messages", "continues")

    def __init__(self, text: str) -> None:
        try:
            messages, open_last = parse_chatml(text)
        except ValueError as exc:
            raise ConfigError(f"cannot send this context to a chat endpoint: {exc}") from None
        # Whitespace alone cannot be continued: templates strip it and then cannot find the message again.
        if open_last and not messages[-1].content.strip():
            messages, open_last = messages[:-1], False
        self.messages = messages
        self.continues = open_last

    def wire(self) -> list[dict[str, str]]:
        """The messages in the request's JSON shape."""
        return [{"role": m.role, "content": m.content} for m in self.messages]


class OpenAIChat(OpenAICompletions):
    """Streams chat completions from an OpenAI-compatible server, for models served only through chat.

    Use it with the prompted dialect (``dialect="prompted"``), whose contexts are ChatML.

    Args:
        base_url: Server URL, e.g. ``http://127.0.0.1:8000/v1`` (``/v1`` is added to a bare host). Defaults to
            ``$OPENAI_BASE_URL``.
        model: Model name; None asks ``/v1/models`` and uses the only model served.
        api_key: API key. Defaults to ``$OPENAI_API_KEY``, else a placeholder (local servers need none).
        continue_final_message: Whether the server continues an open final assistant message (vLLM, SGLang).
            None: yes when ``/v1/models`` says the server is vLLM or SGLang, no elsewhere. With False, a
            context ending in an open non-empty assistant message raises `ConfigError`.
        **options: The keyword options of `OpenAICompletions` (``timeout``, ``read_timeout``,
            ``connect_timeout``, ``max_retries``, ``retry``, ``requests_per_second``, ``max_concurrency``,
            ``context_window``, ``extra_body``).
    """

    name = "openai-chat"

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        *,
        continue_final_message: bool | None = None,
        **options: Any,
    ) -> None:
        super().__init__(base_url, model, api_key, **options)
        self.continue_final_message = continue_final_message

    async def _continues(self) -> bool:
        """Whether the server continues open assistant messages (when None, decided once from /v1/models;
        a failed discovery raises and decides nothing)."""
        if self.continue_final_message is None:
            served = await self._models()
            owner = served.get(await self._model(), {}).get("owned_by")
            self.continue_final_message = owner in _CONTINUING_ENGINES
        return self.continue_final_message

    # -- the request ------------------------------------------------------------------------------------

    async def _body(self, request: GenerationRequest) -> dict[str, Any]:
        body = await super()._body(request)
        conversation = _Conversation(body.pop("prompt"))
        body["messages"] = conversation.wire()
        if conversation.continues:
            if not await self._continues():
                # `stream` refuses such a context up front, so this is a resumed attempt: the text received
                # before the break would have to be continued, and this server cannot do that.
                raise BackendError(
                    f"the stream from {self.base_url} broke after some text and cannot be resumed: resuming "
                    "continues the partial assistant message, and continue_final_message is off",
                    request_id=request.request_id,
                    retryable=False,
                )
            body["extra_body"] = {**(body["extra_body"] or {}), **_CONTINUE}
        return body

    async def _open_stream(self, body: dict[str, Any]) -> Any:
        return await self._client.chat.completions.create(**body)

    @staticmethod
    def _choice_text(choice: Any) -> str:
        return choice.delta.content or ""

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk | Finish]:
        """Stream the reply to the ChatML context ``request.prompt`` (plain text is one user message).

        Raises:
            ConfigError: The context ends in an open non-empty assistant message and the server does not
                continue messages (use ``PromptedDialect(continuation="user_turn")``), or it is not valid
                ChatML for a chat endpoint.
        """
        if not is_chatml(request.prompt):
            # As ChatML with an open assistant message, a resumed attempt continues the reply, not the prompt.
            chatml = render_chatml([ChatMessage(role="user", content=request.prompt)])
            request = request.model_copy(update={"prompt": chatml})
        if _Conversation(request.prompt).continues and not await self._continues():
            raise ConfigError(
                f"the context ends in an open assistant message to continue, but {self.base_url} is not known "
                "to support continue_final_message (vLLM and SGLang do; pass continue_final_message=True if "
                'yours does). With a hosted chat API use PromptedDialect(continuation="user_turn"), which '
                "hands results back as a new user turn."
            )
        # aclosing: closing this stream closes the retry loop and the HTTP stream at once, not at GC time.
        async with aclosing(super().stream(request)) as items:  # type: ignore[type-var]
            async for item in items:
                yield item

    async def count_tokens(self, text: str) -> int | None:
        """Tokens of the prompt the server renders for the ChatML context `text` (vLLM's ``/tokenize`` with
        ``messages``); plain text is counted as is. None where the server has no ``/tokenize``."""
        if not is_chatml(text):
            return await super().count_tokens(text)
        conversation = _Conversation(text)
        return await self._tokenize(
            {
                "messages": conversation.wire(),
                "add_generation_prompt": not conversation.continues,
                "continue_final_message": conversation.continues,
            }
        )
