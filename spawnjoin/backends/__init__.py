"""Backends: where tokens come from. `base` holds the contract; one module per engine."""

from spawnjoin.backends.base import (
    Backend,
    Capabilities,
    Chunk,
    Finish,
    GenerationRequest,
    SamplingParams,
)

__all__ = ["Backend", "Capabilities", "Chunk", "Finish", "GenerationRequest", "SamplingParams"]
