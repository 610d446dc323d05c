"""A backend for SGLang's native ``/generate`` endpoint, streamed over httpx.

Tested against a protocol-faithful test server (``tests/servers/sglang_server.py``) written from SGLang's
documented protocol, not against SGLang itself, which needs a GPU.

While streaming, ``/generate`` sends the *cumulative* text; this backend slices off what it already has. SGLang
streams tokens as decoded and trims a matched stop string only from the final message, so the backend holds
back the last ``len(longest stop) - 1`` characters until the next message shows they are not a stop. The finish
comes from ``meta_info.finish_reason``: ``{"type": "stop", "matched": "<string>"}`` is a stop string,
``matched`` as a token id is end-of-sequence, ``length`` is ``max_new_tokens``; ``cached_tokens`` (RadixAttention
prefix hits) becomes `Finish.cached_tokens`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx

from spawnjoin._constants import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_REQUEST_DEADLINE,
)
from spawnjoin._exceptions import (
    BackendError,
    ConnectError,
    ContextWindowExceeded,
    RateLimited,
    ServerError,
    Timeout,
)
from spawnjoin.backends._limits import Limiter
from spawnjoin.backends._retry import RetryPolicy, timed_retrying_stream
from spawnjoin.backends.base import Backend, Capabilities, Chunk, Finish, GenerationRequest
from spawnjoin.backends.openai import parse_retry_after

__all__ = ["SGLangBackend"]

_CONTEXT_HINTS = ("context length", "context window", "maximum context", "too long")


class SGLangBackend(Backend):
    """Streams completions from SGLang's ``/generate``.

    Args:
        base_url: Server root, e.g. ``http://127.0.0.1:30000``.
        encode: Tokenizer ``text -> token ids``; when given, prompts are sent as ``input_ids`` and
            `count_tokens` is exact.
        return_logprob: Ask for ``output_token_logprobs``; each batch of new ones goes to ``on_logprobs``.
        on_logprobs: Called with (request id, new ``[logprob, token_id, text]`` entries).
        timeout: Overall deadline of one request in seconds, every retry included.
        read_timeout: Seconds without data before a stream counts as stalled (retried).
        connect_timeout: Seconds to open a connection.
        max_retries: Retries after the first attempt; ``retry`` overrides it with a full policy.
        retry: Backoff settings.
        requests_per_second: Pace of request starts (None: unpaced).
        max_concurrency: Most requests in flight (None: no cap).
        context_window: The model's context length, when ``/v1/models`` does not report it.
        extra_sampling_params: Extra ``sampling_params`` sent with every request.
    """

    name = "sglang"

    def __init__(
        self,
        base_url: str,
        *,
        encode: Callable[[str], Sequence[int]] | None = None,
        return_logprob: bool = False,
        on_logprobs: Callable[[str, list[Any]], None] | None = None,
        timeout: float = DEFAULT_REQUEST_DEADLINE,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry: RetryPolicy | None = None,
        requests_per_second: float | None = None,
        max_concurrency: int | None = None,
        context_window: int | None = None,
        extra_sampling_params: Mapping[str, Any] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._encode = encode
        self._return_logprob = return_logprob
        self._on_logprobs = on_logprobs
        self._deadline = timeout
        self._read_timeout = read_timeout
        self.retry = retry or RetryPolicy(max_retries=max_retries)
        self._limiter = Limiter(requests_per_second, max_concurrency)
        self._window = context_window
        self._window_asked = context_window is not None
        self._extra = dict(extra_sampling_params or {})
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
        )
        self.capabilities = Capabilities(token_counts=True, prefix_cache=True, tokenizer=encode is not None)

    def __repr__(self) -> str:
        return f"SGLangBackend(base_url={self.base_url!r})"

    @asynccontextmanager
    async def _edge(self, request_id: str | None = None) -> AsyncIterator[None]:
        """Translate httpx and decoding errors into spawnjoin's hierarchy."""
        try:
            yield
        except httpx.ConnectError as exc:
            raise ConnectError(f"cannot reach {self.base_url}: {exc}", request_id=request_id) from exc
        except httpx.TimeoutException as exc:
            raise Timeout(f"timed out talking to {self.base_url}", request_id=request_id) from exc
        except httpx.TransportError as exc:
            raise ConnectError(f"connection to {self.base_url} broke: {exc}", request_id=request_id) from exc
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise ServerError(
                f"unreadable response from {self.base_url}: {exc!r}", request_id=request_id
            ) from exc

    async def _check(self, response: httpx.Response, request_id: str) -> None:
        if response.status_code < 400:
            return
        body = (await response.aread()).decode(errors="replace")
        status = response.status_code
        if status == 429:
            raise RateLimited(
                f"rate limited by {self.base_url}",
                retry_after=parse_retry_after(response.headers),
                status=status,
                request_id=request_id,
            )
        if status >= 500:
            raise ServerError(
                f"{self.base_url} failed ({status}): {body[:500]}", status=status, request_id=request_id
            )
        if status == 400 and any(h in body.lower() for h in _CONTEXT_HINTS):
            raise ContextWindowExceeded(body[:500], status=status, request_id=request_id)
        raise BackendError(
            f"{self.base_url}/generate refused the request ({status}): {body[:500]}",
            status=status,
            request_id=request_id,
            retryable=status in (408, 409),
        )

    async def count_tokens(self, text: str) -> int | None:
        return len(self._encode(text)) if self._encode is not None else None

    async def context_window(self) -> int | None:
        if not self._window_asked:
            self._window_asked = True
            try:
                async with self._edge():
                    response = await self._http.get("/v1/models")
                    data = response.json() if response.status_code == 200 else {}
                models = data.get("data") or []
                length = models[0].get("max_model_len") if models else None
                self._window = int(length) if isinstance(length, int) else None
            except BackendError:
                self._window = None
        return self._window

    def _payload(self, request: GenerationRequest) -> dict[str, Any]:
        params = request.params
        sampling: dict[str, Any] = {"temperature": params.temperature, "top_p": params.top_p, **self._extra}
        if params.max_tokens is not None:
            sampling["max_new_tokens"] = params.max_tokens
        if params.top_k is not None:
            sampling["top_k"] = params.top_k
        if params.stop:
            sampling["stop"] = list(params.stop)
        if params.seed is not None:
            sampling["sampling_seed"] = params.seed
        body: dict[str, Any] = {"sampling_params": sampling, "stream": True, "rid": request.request_id}
        if self._encode is not None:
            body["input_ids"] = list(self._encode(request.prompt))
        else:
            body["text"] = request.prompt
        if self._return_logprob:
            body["return_logprob"] = True
        return body

    async def _attempt(self, request: GenerationRequest) -> AsyncIterator[Chunk | Finish]:
        stops = request.params.stop
        hold = max((len(s) for s in stops), default=1) - 1
        emitted = counted = pending = logprobs_seen = 0
        rid = request.request_id
        async with (
            self._limiter.slot(),
            self._edge(rid),
            self._http.stream("POST", "/generate", json=self._payload(request)) as response,
        ):
            await self._check(response, rid)
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                message = json.loads(data)
                if "error" in message:
                    raise ServerError(f"{self.base_url} reported: {message['error']}", request_id=rid)
                text: str = message["text"]
                meta: dict[str, Any] = message.get("meta_info") or {}
                done = meta.get("completion_tokens")
                if isinstance(done, int):
                    pending += done - counted
                    counted = done
                if self._on_logprobs is not None and meta.get("output_token_logprobs"):
                    entries = meta["output_token_logprobs"]
                    self._on_logprobs(rid, entries[logprobs_seen:])
                    logprobs_seen = len(entries)
                finish = meta.get("finish_reason")
                upto = len(text) if finish else len(text) - hold
                if upto > emitted:
                    yield Chunk(text[emitted:upto], pending)
                    emitted, pending = upto, 0
                if finish:
                    yield self._finish(finish, meta, rid)
                    return

    def _finish(self, finish: dict[str, Any], meta: dict[str, Any], rid: str) -> Finish:
        kind = finish.get("type")
        matched = finish.get("matched")
        if kind == "abort":
            raise ServerError(
                f"{self.base_url} aborted the request: {finish.get('message', '')}", request_id=rid
            )
        reason = "length" if kind == "length" else "stop" if isinstance(matched, str) else "eos"
        return Finish(
            reason,  # type: ignore[arg-type]
            matched if reason == "stop" else None,
            meta.get("prompt_tokens"),
            meta.get("completion_tokens"),
            meta.get("cached_tokens"),
        )

    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk | Finish]:
        return timed_retrying_stream(
            request, self._attempt, self.retry, read_timeout=self._read_timeout, timeout=self._deadline
        )

    async def aclose(self) -> None:
        await self._http.aclose()
