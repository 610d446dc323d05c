"""Backends: where tokens come from. `base` holds the contract; one module per engine.

* `EmbeddedBackend` (`embedded`): a Hugging Face model in-process on transformers' continuous batching
  (the default; needs the `local` extra). Imported lazily so that `import spawnjoin` never loads torch.
* `OpenAICompletions` (`openai`): any OpenAI-compatible `/v1/completions` server (vLLM, SGLang, llama.cpp,
  hosted APIs); `OpenAIChat` (`openai_chat`) for chat-only models.
* `SGLangBackend` (`sglang`): SGLang's native `/generate`.
* `MultiBackend` (`multi`): several endpoints, least outstanding requests, prefix affinity, failover.
* `ScriptedBackend` (`scripted`): replays scripted text in-process, for tests and demos.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spawnjoin.backends._retry import RetryPolicy
from spawnjoin.backends.base import (
    Backend,
    Capabilities,
    Chunk,
    Finish,
    GenerationRequest,
    SamplingParams,
)
from spawnjoin.backends.multi import MultiBackend
from spawnjoin.backends.openai import OpenAICompletions
from spawnjoin.backends.openai_chat import OpenAIChat
from spawnjoin.backends.scripted import ScriptedBackend
from spawnjoin.backends.sglang import SGLangBackend

if TYPE_CHECKING:
    from spawnjoin.backends.embedded import EmbeddedBackend

__all__ = [
    "Backend",
    "Capabilities",
    "Chunk",
    "EmbeddedBackend",
    "Finish",
    "GenerationRequest",
    "MultiBackend",
    "OpenAIChat",
    "OpenAICompletions",
    "RetryPolicy",
    "SGLangBackend",
    "SamplingParams",
    "ScriptedBackend",
]


def __getattr__(name: str) -> Any:
    if name == "EmbeddedBackend":
        from spawnjoin.backends.embedded import EmbeddedBackend

        return EmbeddedBackend
    raise AttributeError(f"module 'spawnjoin.backends' has no attribute {name!r}")
