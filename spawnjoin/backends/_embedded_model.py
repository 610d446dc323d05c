"""Model-directory checks and cache sizing of the embedded engine (reads configs, loads no weights)."""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any

from spawnjoin._exceptions import ConfigError

__all__ = [
    "resolve_model_dir",
    "load_config",
    "choose_dtype",
    "max_positions",
    "uses_sliding_window",
    "default_num_blocks",
]

# The default KV cache holds this many tokens, unless that takes more than _DEFAULT_CACHE_BYTES.
_DEFAULT_CACHE_TOKENS = 16384
_DEFAULT_CACHE_BYTES = 256 * 1024**2
_MIN_CACHE_PAGES = 8
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_WEIGHT_FILES = ("*.safetensors", "*.bin", "*.safetensors.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def resolve_model_dir(model: str | Path | None, default: str) -> Path:
    """The model directory to load: `model`, or the shipped model named `default`; checks its files."""
    if model is None:
        path = Path(str(resources.files("spawnjoin").joinpath("models").joinpath(default)))
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"the default model is not installed (expected it in {path}; training exports it there: "
                "spawnjoin-train sft --recipe training/recipes/countdown-apr.yaml). Pass a local Hugging "
                "Face model directory instead: EmbeddedBackend(model='path/to/model'), or "
                "solve(..., backend=EmbeddedBackend(model=...))"
            )
        return path
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"model directory {str(path)!r} does not exist: pass a local Hugging Face model directory "
            "(config.json, weights, tokenizer); the embedded backend never downloads"
        )
    missing = [
        what
        for what, patterns in (
            ("config.json", ("config.json",)),
            ("weights", _WEIGHT_FILES),
            ("tokenizer", _TOKENIZER_FILES),
        )
        if not any(any(path.glob(p)) for p in patterns)
    ]
    if missing:
        raise ConfigError(
            f"{str(path)!r} is not a Hugging Face model directory: no {', no '.join(missing)} found"
        )
    return path


def load_config(path: Path) -> Any:
    """The model's transformers config; `ConfigError` unless it is a causal LM (imports transformers)."""
    try:
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    except ImportError as exc:
        raise ConfigError(
            "the embedded backend needs torch and transformers: pip install 'spawnjoin[local]'"
        ) from exc
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cannot read the model config in {str(path)!r}: {exc}") from exc
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ConfigError(
            f"{str(path)!r} holds a {config.model_type!r} model, which is not a causal language model; "
            "the embedded backend needs one (e.g. Llama, Qwen2, GPT-2)"
        )
    return config


def choose_dtype(dtype: str, config: Any, device: str) -> str:
    """Resolve `"auto"` to the checkpoint's dtype, keeping float16 off the CPU."""
    if dtype != "auto":
        return dtype
    saved = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    name = str(saved).removeprefix("torch.") if saved is not None else "float32"
    if name not in _DTYPE_BYTES or (name == "float16" and device == "cpu"):
        return "float32"
    return name


def _text_config(config: Any) -> Any:
    getter = getattr(config, "get_text_config", None)
    return getter() if getter is not None else config


def max_positions(config: Any) -> int | None:
    """The model's context length from its config, if it states one."""
    text = _text_config(config)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(text, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def uses_sliding_window(config: Any) -> bool:
    """Whether some layers use sliding-window attention (transformers then shares no cache pages)."""
    text = _text_config(config)
    layer_types = getattr(text, "layer_types", None) or ()
    return "sliding_attention" in layer_types


def default_num_blocks(config: Any, dtype: str, page_size: int) -> int:
    """Cache pages for 16,384 tokens, or as many as fit in 256 MiB, at least 8."""
    text = _text_config(config)
    heads = getattr(text, "num_attention_heads", 1)
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    per_token = 2 * text.num_hidden_layers * kv_heads * head_dim * _DTYPE_BYTES.get(dtype, 4)
    tokens = min(_DEFAULT_CACHE_TOKENS, _DEFAULT_CACHE_BYTES // max(per_token, 1))
    return max(_MIN_CACHE_PAGES, math.ceil(tokens / page_size))
