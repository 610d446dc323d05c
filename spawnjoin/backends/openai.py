"""A backend for OpenAI-compatible text completions (``/v1/completions``): vLLM, SGLang, hosted APIs.

Streams with ``openai.AsyncOpenAI(...).completions.create(stream=True)``. The client's own retries are off:
every attempt goes through spawnjoin's one retry loop (`spawnjoin.backends._retry`), which resumes a broken
stream from the text already received. Foreign errors become spawnjoin's in one place, `_edge`.

Which stop string matched: SGLang sends ``matched_stop`` and vLLM ``stop_reason`` (the string, a token id, or
null for end-of-sequence); either is used when present. A server that sends neither cannot tell a stop string
from end-of-sequence; then, for ``finish_reason == "stop"``, a request with exactly one stop string reports
it, and a request with several reports ``eos`` (the runtime re-appends nothing rather than a wrong string).
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import openai
import pydantic

from spawnjoin._constants import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_REQUEST_DEADLINE,
)
from spawnjoin._exceptions import (
    BackendError,
    ConfigError,
    ConnectError,
    ContextWindowExceeded,
    ModelNotFound,
    RateLimited,
    ServerError,
    Timeout,
)
from spawnjoin.backends._limits import Limiter
from spawnjoin.backends._retry import RetryPolicy, retrying_call, timed_retrying_stream
from spawnjoin.backends.base import Backend, Capabilities, Chunk, Finish, FinishReason, GenerationRequest

__all__ = ["OpenAICompletions"]

log = logging.getLogger(__name__)

_CONTEXT_HINTS = ("context length", "context window", "maximum context", "too long", "max_model_len")


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds a server asked to wait: ``retry-after-ms``, ``retry-after`` seconds or an HTTP date."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return float(millis) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def _root_url(base_url: str) -> str:
    """The server root for vLLM/SGLang extras such as ``/tokenize`` (``base_url`` minus ``/v1``)."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


class OpenAICompletions(Backend):
    """Streams text completions from an OpenAI-compatible server.

    Args:
        base_url: Server URL, e.g. ``http://127.0.0.1:8000/v1`` (``/v1`` is added to a bare host). Defaults to
            ``$OPENAI_BASE_URL``.
        model: Model name; None asks ``/v1/models`` and uses the only model served.
        api_key: API key. Defaults to ``$OPENAI_API_KEY``, else a placeholder (local servers need none).
        timeout: Overall deadline of one request in seconds, every retry included.
        read_timeout: Seconds without data before a stream counts as stalled (retried).
        connect_timeout: Seconds to open a connection.
        max_retries: Retries after the first attempt; ``retry`` overrides it with a full policy.
        retry: Backoff settings.
        requests_per_second: Pace of request starts (None: unpaced).
        max_concurrency: Most requests in flight (None: no cap).
        context_window: The model's context length, when ``/v1/models`` does not report ``max_model_len``.
        extra_body: Extra JSON fields sent with every completion request (engine-specific options).
        return_token_ids: Ask the server for the generated token ids (vLLM's ``return_token_ids``) and report
            them in ``Finish.token_ids``, so that training can use the sampled tokens instead of re-tokenizing
            the text. A server that sends none leaves ``Finish.token_ids`` unset.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_REQUEST_DEADLINE,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry: RetryPolicy | None = None,
        requests_per_second: float | None = None,
        max_concurrency: int | None = None,
        context_window: int | None = None,
        extra_body: Mapping[str, Any] | None = None,
        return_token_ids: bool = False,
    ) -> None:
        url = base_url or os.environ.get("OPENAI_BASE_URL")
        if not url:
            raise ConfigError(
                f"{type(self).__name__} needs base_url (or $OPENAI_BASE_URL), e.g. http://127.0.0.1:8000/v1"
            )
        url = url.rstrip("/")
        if url.count("/") == 2:  # scheme://host[:port] with no path
            url += "/v1"
        self.base_url = url
        self.model = model
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self._deadline = timeout
        self._read_timeout = read_timeout
        self.retry = retry or RetryPolicy(max_retries=max_retries)
        self._limiter = Limiter(requests_per_second, max_concurrency)
        self._window = context_window
        self._extra_body = dict(extra_body or {})
        self._return_token_ids = return_token_ids
        self._client = openai.AsyncOpenAI(
            base_url=url,
            api_key=self._api_key,
            max_retries=0,
            timeout=openai.Timeout(read_timeout, connect=connect_timeout),
        )
        self._served: dict[str, dict[str, Any]] | None = None
        self._tokenize_ok: bool | None = None
        self._warned_stop = False
        self.capabilities = Capabilities(token_counts=True)

    def __repr__(self) -> str:
        key = (
            "none"
            if self._api_key == "EMPTY"
            else f"...{self._api_key[-4:]}"
            if len(self._api_key) > 8
            else "***"
        )
        return f"{type(self).__name__}(base_url={self.base_url!r}, model={self.model!r}, api_key={key!r})"

    # -- the error edge ---------------------------------------------------------------------------------

    @asynccontextmanager
    async def _edge(self, request_id: str | None = None) -> AsyncIterator[None]:
        """Translate openai and decoding errors into spawnjoin's hierarchy (the most specific first)."""
        try:
            yield
        except openai.APITimeoutError as exc:
            raise Timeout(f"timed out talking to {self.base_url}", request_id=request_id) from exc
        except openai.APIConnectionError as exc:
            raise ConnectError(
                f"cannot reach {self.base_url}: {exc.__cause__ or exc}", request_id=request_id
            ) from exc
        except openai.RateLimitError as exc:
            wait = parse_retry_after(exc.response.headers)
            raise RateLimited(
                f"rate limited by {self.base_url}: {exc.message}",
                retry_after=wait,
                status=429,
                request_id=request_id or exc.request_id,
            ) from exc
        except openai.NotFoundError as exc:
            raise await self._not_found(exc, request_id) from exc
        except openai.BadRequestError as exc:
            if any(hint in str(exc.message).lower() for hint in _CONTEXT_HINTS):
                raise ContextWindowExceeded(exc.message, status=400, request_id=request_id) from exc
            raise BackendError(f"bad request: {exc.message}", status=400, request_id=request_id) from exc
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status >= 500:
                raise ServerError(
                    f"{self.base_url} failed ({status}): {exc.message}", status=status, request_id=request_id
                ) from exc
            raise BackendError(
                f"{self.base_url} refused the request ({status}): {exc.message}",
                status=status,
                request_id=request_id,
                retryable=status in (408, 409),
            ) from exc
        except openai.APIError as exc:  # an error event inside a stream
            raise ServerError(
                f"{self.base_url} reported an error mid-stream: {exc.message}", request_id=request_id
            ) from exc
        except (json.JSONDecodeError, pydantic.ValidationError, UnicodeDecodeError) as exc:
            raise ServerError(
                f"unreadable response from {self.base_url}: {exc}", request_id=request_id
            ) from exc

    async def _not_found(self, exc: openai.NotFoundError, request_id: str | None) -> BackendError:
        if "model" not in str(exc.message).lower():
            return BackendError(
                f"404 from {exc.request.url} (does base_url end with /v1?)", status=404, request_id=request_id
            )
        try:
            served = ", ".join(await self._models())
        except BackendError:
            served = "unknown"
        return ModelNotFound(
            f"{self.base_url} does not serve {self.model!r}; it serves: {served}",
            status=404,
            request_id=request_id,
        )

    # -- server discovery -------------------------------------------------------------------------------

    async def _models(self) -> dict[str, dict[str, Any]]:
        """Served models by id, with their extra fields (``max_model_len``, ``owned_by``); asked once."""
        if self._served is None:

            async def attempt() -> Any:
                async with self._edge():
                    return await self._client.models.list()

            page = await retrying_call(attempt, self.retry)
            self._served = {m.id: {"owned_by": m.owned_by, **(m.model_extra or {})} for m in page.data}
        return self._served

    async def _model(self) -> str:
        if self.model is None:
            served = list(await self._models())
            if len(served) != 1:
                raise ConfigError(
                    f"{self.base_url} serves {len(served)} models ({', '.join(served) or 'none'}); pass model=..."
                )
            self.model = served[0]
        return self.model

    async def _info(self) -> dict[str, Any]:
        try:
            return (await self._models()).get(await self._model(), {})
        except BackendError:
            return {}

    async def context_window(self) -> int | None:
        if self._window is None:
            length = (await self._info()).get("max_model_len")
            self._window = int(length) if isinstance(length, int) else None
        return self._window

    async def count_tokens(self, text: str) -> int | None:
        """Tokens in `text` from the server's ``/tokenize`` (vLLM's shape), or None where there is none."""
        return await self._tokenize({"prompt": text, "add_special_tokens": False})

    async def _tokenize(self, fields: dict[str, Any]) -> int | None:
        """The ``count`` of a ``/tokenize`` request made of `fields` and the model, or None without one."""
        if self._tokenize_ok is False:
            return None
        body = {"model": await self._model(), **fields}

        async def attempt() -> object:
            # A request like any other: under load, thousands of uncapped /tokenize calls would pile up in
            # the HTTP connection pool and time out while connecting. 429/5xx and timeouts are retried.
            async with self._limiter.slot(), self._edge():
                return await self._client.post(_root_url(self.base_url) + "/tokenize", cast_to=object, body=body)

        try:
            data = await retrying_call(attempt, self.retry)
        except BackendError as exc:
            if exc.status in (404, 405, 501) or (exc.status == 400 and self._tokenize_ok is None):
                self._tokenize_ok = False
                return None
            raise
        count = data.get("count") if isinstance(data, dict) else None
        if not isinstance(count, int):
            self._tokenize_ok = False
            return None
        if not self._tokenize_ok:
            self._tokenize_ok = True
            self.capabilities = dataclasses.replace(self.capabilities, tokenizer=True)
        return count

    # -- streaming ------------------------------------------------------------------------------------

    async def _body(self, request: GenerationRequest) -> dict[str, Any]:
        """Keyword arguments of the streaming ``create`` call for `request`."""
        params = request.params
        info = await self._info()
        vllm = info.get("owned_by") == "vllm"
        options: dict[str, Any] = {"include_usage": True}
        if vllm:
            options["continuous_usage_stats"] = True  # exact token counts on every chunk
        body: dict[str, Any] = {
            "model": await self._model(),
            "prompt": request.prompt,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stream": True,
            "stream_options": options,
        }
        if params.max_tokens is not None:
            body["max_tokens"] = params.max_tokens
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        extra = dict(self._extra_body)
        if params.top_k is not None:
            extra["top_k"] = params.top_k
        if self._return_token_ids:
            extra["return_token_ids"] = True
        body["extra_body"] = extra or None
        body["extra_headers"] = {"X-Request-Id": request.request_id}
        return body

    def _matched(self, choice: Any, request: GenerationRequest) -> tuple[FinishReason, str | None]:
        extra = choice.model_extra or {}
        if choice.finish_reason == "length":
            return "length", None
        for key in ("matched_stop", "stop_reason"):
            if key in extra:
                value = extra[key]
                return (
                    ("stop", value)
                    if isinstance(value, str) and value in request.params.stop
                    else ("eos", None)
                )
        stops = request.params.stop
        if choice.finish_reason == "stop" and len(stops) == 1:
            return "stop", stops[0]
        if choice.finish_reason == "stop" and stops and not self._warned_stop:
            self._warned_stop = True
            log.warning("%s does not say which stop string matched; reporting end-of-sequence", self.base_url)
        return "eos", None

    async def _open_stream(self, body: dict[str, Any]) -> Any:
        """Start one streamed request (the chat backend calls ``chat.completions`` instead)."""
        return await self._client.completions.create(**body)

    @staticmethod
    def _choice_text(choice: Any) -> str:
        """The text one streamed choice carries (the chat backend reads ``delta.content``)."""
        return choice.text

    async def _attempt(self, request: GenerationRequest) -> AsyncIterator[Chunk | Finish]:
        """One streamed attempt: chunks then a finish, or an error (mapped)."""
        finish: tuple[FinishReason, str | None] | None = None
        usage: Any = None
        counted = 0
        pending = 0
        ids: list[int] | None = [] if self._return_token_ids else None
        async with self._limiter.slot():
            try:
                async with self._edge(request.request_id):
                    stream = await self._open_stream(await self._body(request))
                    text_of = self._choice_text
                    try:
                        async for event in stream:
                            if event.usage is not None:
                                usage = event.usage
                            if not event.choices:
                                continue
                            choice = event.choices[0]
                            text = text_of(choice)
                            if ids is not None:
                                delta = (choice.model_extra or {}).get("token_ids")
                                if isinstance(delta, list):
                                    ids.extend(delta)
                            if event.usage is not None:  # vLLM's continuous usage: exact per chunk
                                pending += event.usage.completion_tokens - counted
                                counted = event.usage.completion_tokens
                            elif text:
                                pending += 1
                            if text:
                                yield Chunk(text, pending)
                                pending = 0
                            if choice.finish_reason is not None:
                                finish = self._matched(choice, request)
                    finally:
                        await stream.close()
            except BackendError:
                if finish is None:
                    raise
                # The finish arrived; only the trailing usage event was lost.
        if finish is None:
            return
        prompt_tokens = completion_tokens = cached = None
        if usage is not None:
            prompt_tokens, completion_tokens = usage.prompt_tokens, usage.completion_tokens
            details = getattr(usage, "prompt_tokens_details", None)
            cached = getattr(details, "cached_tokens", None) if details is not None else None
            if cached is not None and not self.capabilities.prefix_cache:
                self.capabilities = dataclasses.replace(self.capabilities, prefix_cache=True)
        token_ids = tuple(ids) if ids and (completion_tokens is None or len(ids) == completion_tokens) else None
        yield Finish(finish[0], finish[1], prompt_tokens, completion_tokens, cached, token_ids)

    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk | Finish]:
        return timed_retrying_stream(
            request, self._attempt, self.retry, read_timeout=self._read_timeout, timeout=self._deadline
        )

    async def aclose(self) -> None:
        await self._client.close()
