"""The whole backend contract: neutral request types and the `Backend` interface.

A backend turns one `GenerationRequest` into a stream of `Chunk` objects ending with exactly one `Finish`.
It never sees dialect syntax or thread trees. Conventions every backend follows:

* Stop strings are *not* part of the streamed text; the matched stop string (or stop token's text) is
  reported in `Finish.matched_stop` and the runtime re-appends it.
* `Chunk.tokens` is the number of tokens the chunk carries when the backend knows it (else 0); the
  authoritative counts are in `Finish`.
* Errors are raised as `spawnjoin.BackendError` subclasses, mapped at the backend's edge.
* A backend translates `SamplingParams` to its own wire format itself.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SamplingParams",
    "GenerationRequest",
    "Chunk",
    "Finish",
    "FinishReason",
    "Capabilities",
    "Backend",
]

FinishReason = Literal["stop", "eos", "length", "cancelled"]


class SamplingParams(BaseModel):
    """Sampling options shared by every backend.

    Args:
        max_tokens: Most tokens to generate; the runtime sizes it to fit the context window.
        temperature: Softmax temperature; 0 means greedy.
        top_p: Nucleus sampling mass.
        top_k: Keep only the k most likely tokens (None: no limit).
        seed: Sampling seed, where the backend supports one.
        stop: Stop strings; generation ends when one appears (it is not included in the text).
    """

    model_config = ConfigDict(frozen=True)

    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1)
    seed: int | None = None
    stop: tuple[str, ...] = ()


class GenerationRequest(BaseModel):
    """One completion request: a prompt continued under some sampling options.

    Args:
        prompt: The full text the model continues.
        params: Sampling options.
        request_id: Unique id of this request (kept across retries).
        thread_id: The reasoning thread that issued it.
        affinity: Requests with the same affinity key prefer the same server (shared prefixes).
    """

    model_config = ConfigDict(frozen=True)

    prompt: str
    params: SamplingParams = SamplingParams()
    request_id: str
    thread_id: str = ""
    affinity: str | None = None


@dataclass(slots=True, frozen=True)
class Chunk:
    """A piece of streamed text (a plain dataclass: it sits on the hot path)."""

    text: str
    tokens: int = 0


@dataclass(slots=True, frozen=True)
class Finish:
    """The end of a stream.

    Attributes:
        reason: `stop` (a stop string matched), `eos` (end-of-sequence), `length` (max_tokens), `cancelled`.
        matched_stop: The stop string that ended generation, if any.
        prompt_tokens: Tokens in the prompt, if known.
        completion_tokens: Tokens generated, if known.
        cached_tokens: Prompt tokens served from a prefix cache, if the engine reports it.
        token_ids: The generated token ids, if the engine reports them (the embedded engine does): every token
            the streamed text came from, including the one that completed a stop string (whose text may run past
            it, e.g. a `"<End>\n"` token for the stop `"<End>"`) and a final end-of-sequence token. Training
            uses them: re-tokenizing the text would not give back such a token.
    """

    reason: FinishReason
    matched_stop: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    token_ids: tuple[int, ...] | None = None


@dataclass(slots=True, frozen=True)
class Capabilities:
    """Optional engine features; the runtime falls back when one is missing."""

    token_counts: bool = False
    """The backend reports exact prompt/completion token counts."""
    prefix_cache: bool = False
    """The engine reuses shared prompt prefixes (reports `cached_tokens`)."""
    tokenizer: bool = False
    """`count_tokens` is exact (otherwise it is an estimate or None)."""
    extra: dict[str, bool] = field(default_factory=dict)


class Backend(abc.ABC):
    """A source of streamed completions. Subclasses implement `stream`; the rest has defaults."""

    name: str = "backend"
    capabilities: Capabilities = Capabilities()

    @abc.abstractmethod
    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk | Finish]:
        """Stream the completion of `request`: any number of `Chunk`, then exactly one `Finish`.

        Cancelling the consuming task must stop generation on the engine (close the stream).
        """

    async def count_tokens(self, text: str) -> int | None:
        """Tokens `text` takes for this backend's model, or None when unknown."""
        return None

    async def context_window(self) -> int | None:
        """The model's context length in tokens, or None when unknown."""
        return None

    async def aclose(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release connections, threads and engines. Safe to call twice."""

    async def __aenter__(self) -> Backend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
