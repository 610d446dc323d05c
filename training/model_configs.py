"""Named `LlamaConfig` sizes for models trained from scratch on task traces.

The names run from `tiny` (unit tests, a fraction of a million parameters) to `reference` (the APR paper's 228M
non-embedding model: 18 layers, hidden 1024, 16 heads, FFN 2752, context 4096). `small` is the shape the shipped
Countdown model uses on a two-core CPU (docs/training.md explains the choice).

Example:
    >>> from training.model_configs import build_config
    >>> build_config("tiny", vocab_size=64).num_hidden_layers
    2
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import LlamaConfig

__all__ = ["ModelShape", "MODEL_SHAPES", "build_config"]


@dataclass(frozen=True)
class ModelShape:
    """The shape of a Llama-architecture decoder.

    Args:
        hidden_size (`int`): Width of the residual stream.
        num_hidden_layers (`int`): Number of decoder blocks.
        num_attention_heads (`int`): Attention heads (all heads keep their own keys and values).
        intermediate_size (`int`): Width of the SwiGLU feed-forward layer.
        max_position_embeddings (`int`): Longest sequence the rotary embedding is set up for.
        tie_word_embeddings (`bool`): Share the input embedding and the output projection.
    """

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = True


MODEL_SHAPES: dict[str, ModelShape] = {
    # Unit tests: builds and steps in milliseconds.
    "tiny": ModelShape(64, 2, 4, 128, max_position_embeddings=1024),
    # 3.4M parameters: the fastest shape that still learns the trace format.
    "mini": ModelShape(256, 4, 8, 768),
    # 5.1M parameters: the shipped Countdown model (about 2k tokens/s per core in bf16 on a Zen 4 core).
    "small": ModelShape(256, 6, 8, 768),
    # 12.6M parameters: a deeper, wider step up when more compute is available.
    "base": ModelShape(384, 8, 6, 1152),
    # 40M parameters.
    "medium": ModelShape(512, 12, 8, 1536),
    # The APR paper's model (Llama-2 architecture, 228M non-embedding parameters, untied as in Llama-2).
    "reference": ModelShape(1024, 18, 16, 2752, tie_word_embeddings=False),
}


def build_config(name: str, *, vocab_size: int, bos_token_id: int | None = None, eos_token_id: int | None = None,
                 pad_token_id: int | None = None) -> LlamaConfig:
    """Build the `LlamaConfig` of a named shape for a given vocabulary.

    Args:
        name (`str`): A key of `MODEL_SHAPES`.
        vocab_size (`int`): Vocabulary size (the tokenizer's length).
        bos_token_id (`int`, *optional*): Beginning-of-sequence id.
        eos_token_id (`int`, *optional*): End-of-sequence id.
        pad_token_id (`int`, *optional*): Padding id.

    Returns:
        `LlamaConfig`: The configuration, ready for `LlamaForCausalLM(config)`.

    Raises:
        KeyError: When `name` is not a known shape; the message lists the known ones.
    """
    from transformers import LlamaConfig

    try:
        shape = MODEL_SHAPES[name]
    except KeyError:
        raise KeyError(f"unknown model shape {name!r}; choose one of {sorted(MODEL_SHAPES)}") from None
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_attention_heads,
        intermediate_size=shape.intermediate_size,
        max_position_embeddings=shape.max_position_embeddings,
        tie_word_embeddings=shape.tie_word_embeddings,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        rms_norm_eps=1e-5,
    )
