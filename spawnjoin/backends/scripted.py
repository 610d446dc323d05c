"""An in-process backend that replays scripted text, for tests and demos.

`ScriptedBackend` takes a handler ``fn(request) -> str | Iterable[str]`` (sync or async, or returning an
async iterable) or a list of canned outputs, and streams the result the way an engine would:

* A string is cut into tokens by `split_tokens` (a word with its leading whitespace is one token); an
  iterable of strings is taken as given, one token per item.
* Stop strings end generation and are left out of the text, as servers do. Text that might be the start of
  a stop string is held back until the next token shows whether it is, so no stop fragment is ever
  streamed. When several stops match, the one starting earliest wins (ties: the first in the list).
* ``max_tokens`` cuts the output with reason ``length``; running out of script is ``eos``.
* With ``context_window`` set, a prompt that leaves no room, or prompt + ``max_tokens`` beyond the window,
  is rejected with `ContextWindowExceeded` (as vLLM and SGLang reject it with HTTP 400).
* A canned output (or a handler's return value) that is an exception is raised; a handler's iterable may
  raise mid-way to simulate a broken stream.

Every request is recorded in `ScriptedBackend.requests`. The backend hands control to the event loop every
few chunks, so concurrent threads interleave, and sustains well over 50,000 chunks per second.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence

from spawnjoin._constants import SCRIPTED_YIELD_EVERY
from spawnjoin._exceptions import ConfigError, ContextWindowExceeded
from spawnjoin.backends.base import Backend, Capabilities, Chunk, Finish, GenerationRequest

__all__ = ["ScriptedBackend", "Script", "split_tokens"]

Output = str | Iterable[str] | AsyncIterable[str] | BaseException
Script = Callable[[GenerationRequest], Output | Awaitable[Output]]
"""A handler: takes the request, returns its output (or an awaitable of it)."""

_TOKEN_RE = re.compile(r"\s*\S+|\s+")


def split_tokens(text: str) -> list[str]:
    """Cut `text` into word tokens, each word keeping its leading whitespace.

    >>> split_tokens("Hello  big world")
    ['Hello', '  big', ' world']
    """
    return _TOKEN_RE.findall(text)


class _StopScanner:
    """Finds stop strings in a growing text and holds back what could still become one."""

    __slots__ = ("_stops", "_prefixes", "_longest", "_tail")

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._prefixes = {s[:k] for s in self._stops for k in range(1, len(s))}
        self._longest = max((len(s) for s in self._stops), default=0)
        self._tail = ""

    def feed(self, piece: str) -> tuple[str, str | None]:
        """Add one token's text; return (text safe to emit, matched stop or None)."""
        text = self._tail + piece
        best = -1
        matched = None
        for stop in self._stops:
            at = text.find(stop)
            if at != -1 and (best == -1 or at < best):
                best, matched = at, stop
        if matched is not None:
            self._tail = ""
            return text[:best], matched
        hold = 0
        for k in range(min(self._longest - 1, len(text)), 0, -1):
            if text[-k:] in self._prefixes:
                hold = k
                break
        if hold:
            self._tail = text[-hold:]
            return text[:-hold], None
        self._tail = ""
        return text, None

    def flush(self) -> str:
        """The held-back text, once generation ends without a stop."""
        tail, self._tail = self._tail, ""
        return tail


async def _aiterate(pieces: Iterable[str]) -> AsyncIterator[str]:
    for piece in pieces:
        yield piece


class ScriptedBackend(Backend):
    """A backend that streams scripted outputs in-process.

    Args:
        script: A handler ``fn(request)`` returning the output text (a string, an iterable of token
            strings, an async iterable, or an exception to raise), sync or async; or a list of canned
            outputs handed out in request order.
        delay: Seconds to sleep after each chunk (0: only yield to the event loop now and then).
        context_window: Model context length in tokens; enables the server-like length checks.
        yield_every: With no delay, hand control to the event loop once per this many chunks.
        tokenize: How strings (outputs, prompts, `count_tokens`) are cut into tokens.
    """

    name = "scripted"
    capabilities = Capabilities(token_counts=True, tokenizer=True)

    def __init__(
        self,
        script: Script | Sequence[Output],
        *,
        delay: float = 0.0,
        context_window: int | None = None,
        yield_every: int = SCRIPTED_YIELD_EVERY,
        tokenize: Callable[[str], list[str]] = split_tokens,
    ) -> None:
        if callable(script):
            self._handler: Script | None = script
            self._canned: list[Output] = []
        elif isinstance(script, (str, bytes)):
            raise ConfigError("ScriptedBackend takes a handler or a list of outputs, not a single string")
        else:
            self._handler = None
            self._canned = list(script)
        self._delay = delay
        self._window = context_window
        self._yield_every = max(1, yield_every)
        self._tokenize = tokenize
        self._next = 0
        self.requests: list[GenerationRequest] = []
        """Every request received, in order."""

    def __repr__(self) -> str:
        source = "handler" if self._handler is not None else f"{len(self._canned)} outputs"
        return f"ScriptedBackend({source}, requests={len(self.requests)})"

    async def count_tokens(self, text: str) -> int | None:
        return len(self._tokenize(text))

    async def context_window(self) -> int | None:
        return self._window

    async def _output(self, request: GenerationRequest) -> Output:
        if self._handler is not None:
            result = self._handler(request)
            if inspect.isawaitable(result):
                result = await result
            return result
        if self._next >= len(self._canned):
            raise ConfigError(
                f"ScriptedBackend ran out of canned outputs after {len(self._canned)} requests "
                f"(request {request.request_id!r}); pass more outputs or a handler"
            )
        self._next += 1
        return self._canned[self._next - 1]

    def _budget(self, request: GenerationRequest, prompt_tokens: int) -> int | None:
        max_tokens = request.params.max_tokens
        if self._window is None:
            return max_tokens
        room = self._window - prompt_tokens
        if room <= 0 or (max_tokens is not None and max_tokens > room):
            raise ContextWindowExceeded(
                f"prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) exceeds the context window "
                f"({self._window} tokens)",
                status=400,
                request_id=request.request_id,
            )
        return room if max_tokens is None else max_tokens

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk | Finish]:
        self.requests.append(request)
        prompt_tokens = len(self._tokenize(request.prompt))
        limit = self._budget(request, prompt_tokens)
        output = await self._output(request)
        if isinstance(output, BaseException):
            raise output
        pieces: AsyncIterator[str]
        if isinstance(output, str):
            pieces = _aiterate(self._tokenize(output))
        elif isinstance(output, AsyncIterable):
            pieces = output.__aiter__()
        else:
            pieces = _aiterate(output)

        scanner = _StopScanner(request.params.stop)
        scan = bool(request.params.stop)
        delay, every = self._delay, self._yield_every
        generated = 0
        unreported = 0
        reason = "eos"
        matched: str | None = None
        async for piece in pieces:
            if limit is not None and generated >= limit:
                reason = "length"
                break
            generated += 1
            unreported += 1
            if scan:
                text, matched = scanner.feed(piece)
            else:
                text = piece
            if text:
                yield Chunk(text, unreported)
                unreported = 0
            if matched is not None:
                reason = "stop"
                break
            if delay:
                await asyncio.sleep(delay)
            elif generated % every == 0:
                await asyncio.sleep(0)
        if matched is None:
            rest = scanner.flush()
            if rest:
                yield Chunk(rest, unreported)
        if hasattr(pieces, "aclose"):
            await pieces.aclose()
        yield Finish(
            reason,  # type: ignore[arg-type]
            matched_stop=matched,
            prompt_tokens=prompt_tokens,
            completion_tokens=generated,
        )
