"""The embedded engine: a local Hugging Face model run in-process on transformers' continuous batching.

`EmbeddedBackend` is the default backend of `spawnjoin.solve()`. Every thread of every concurrent solve
becomes one request of one shared batch: requests join while others run, and a thread's tokens stream to
its coroutine as the engine produces them. Prompts that share whole cache pages with earlier or running
requests reuse them (prefix sharing), which is what makes spawned children cheap.

What it does on top of the engine:

* Stop strings are found in the incrementally decoded text (also across chunks, also spanning tokens);
  text that may begin a stop string is held back, the engine request is cancelled on a match, and the
  stop string is left out of the text. A stop string that is exactly one token is also handed to the
  engine as a stop token, so the engine halts on that token at once.
* Sampling: `temperature == 0` is greedy (argmax, identical to `model.generate`); other requests use
  per-request temperature, top-p and top-k. The engine decides greedy vs sampling for the whole batch, so
  greedy and sampled requests run on two engines over the same weights, each started on first use.
* Not supported by the engine: a per-request `seed`. Sampling draws from the engine's one generator
  (seeded by `EmbeddedBackend(seed=...)`), so sampled outputs depend on what else is in the batch.

torch and transformers are imported when a backend is built, never by `import spawnjoin`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from spawnjoin._exceptions import BackendError, ConfigError, ContextWindowExceeded, ServerError
from spawnjoin.backends._embedded_engine import Engine, EngineClosed, EngineDied, Mailbox
from spawnjoin.backends._embedded_model import (
    choose_dtype,
    default_num_blocks,
    load_config,
    max_positions,
    resolve_model_dir,
    uses_sliding_window,
)
from spawnjoin.backends._embedded_text import IncrementalDecoder, StopMatcher
from spawnjoin.backends.base import Backend, Capabilities, Chunk, Finish, GenerationRequest, SamplingParams

__all__ = ["EmbeddedBackend", "DEFAULT_MODEL"]

logger = logging.getLogger("spawnjoin.backends.embedded")

DEFAULT_MODEL = "countdown-apr"
"""The model shipped in `spawnjoin/models/` and loaded when no model is given."""

Dtype = Literal["auto", "float32", "bfloat16"]

# Defaults tuned on a 2-core CPU (see docs/backends-embedded.md).
_DEFAULT_MAX_BATCH_TOKENS = 256
_DEFAULT_PAGE_SIZE = 32
# On CPU the engine attends densely over the keys of every request in the forward pass, so a step costs
# about requests x (sum of their contexts): past ~16 requests per pass, more requests cost more than they save.
_DEFAULT_MAX_REQUESTS_PER_BATCH = 16


class EmbeddedBackend(Backend):
    """Runs a local causal LM in this process with continuous batching.

    Args:
        model: A local Hugging Face model directory (config.json, safetensors weights, tokenizer files).
            None: the shipped `spawnjoin/models/countdown-apr`. Nothing is ever downloaded.
        device: Torch device for the model and its KV cache.
        dtype: Weight and cache dtype. `"auto"` keeps the checkpoint's dtype (float16 becomes float32 on
            CPU).
        max_batch_tokens: Most tokens in one forward pass (prefill chunks plus one per decoding request).
        num_blocks: KV cache pages of `page_size` tokens (shared by all requests in flight). None: room
            for 16,384 tokens, or as many as fit in 256 MiB. A request never exceeds the cache, so the
            reported `context_window` is the smaller of the model's and the cache's.
        page_size: Tokens per cache page; prompts share whole pages, so smaller pages share more.
        max_requests_per_batch: Most requests in one forward pass; the others wait their turn (None: only
            `max_batch_tokens` limits). On CPU attention cost grows with its square, hence 16.
        torch_threads: Set `torch.set_num_threads` (process-wide) when the model loads; None leaves it.
        seed: Seed of the sampling engine (per-request seeds are not supported by the engine).
        prefix_sharing: Reuse cache pages of shared prompt prefixes (`allow_block_sharing`).
        add_special_tokens: Let the tokenizer add its special tokens (e.g. BOS) to each prompt.

    Raises:
        ConfigError: The directory is missing, is not a causal LM, or torch/transformers are not installed.
    """

    name = "embedded"

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str = "cpu",
        dtype: Dtype = "auto",
        max_batch_tokens: int = _DEFAULT_MAX_BATCH_TOKENS,
        num_blocks: int | None = None,
        page_size: int = _DEFAULT_PAGE_SIZE,
        max_requests_per_batch: int | None = _DEFAULT_MAX_REQUESTS_PER_BATCH,
        torch_threads: int | None = None,
        seed: int | None = None,
        prefix_sharing: bool = True,
        add_special_tokens: bool = True,
    ) -> None:
        if dtype not in ("auto", "float32", "bfloat16"):
            raise ConfigError(f"dtype must be 'auto', 'float32' or 'bfloat16', not {dtype!r}")
        if max_batch_tokens < 1 or page_size < 4 or (num_blocks is not None and num_blocks < 1):
            raise ConfigError("max_batch_tokens and num_blocks must be >= 1 and page_size >= 4")
        self.path = resolve_model_dir(model, DEFAULT_MODEL)
        self._config = load_config(self.path)
        self._device = device
        self._dtype = choose_dtype(dtype, self._config, device)
        self._max_batch_tokens = max_batch_tokens
        self._page_size = page_size
        self._num_blocks = num_blocks or default_num_blocks(self._config, self._dtype, page_size)
        self._max_requests_per_batch = max_requests_per_batch
        self._torch_threads = torch_threads
        self._seed = seed
        self._prefix_sharing = prefix_sharing
        self._add_special_tokens = add_special_tokens
        positions = max_positions(self._config)
        capacity = self._num_blocks * page_size
        self._window = min(positions, capacity) if positions else capacity
        self.capabilities = Capabilities(
            token_counts=True,
            tokenizer=True,
            prefix_cache=prefix_sharing and not uses_sliding_window(self._config),
            extra={"per_request_sampling": True, "per_request_seed": False},
        )
        self._lock = threading.Lock()
        self._tokenizer: Any = None
        self._model: Any = None
        self._eos_ids: frozenset[int] = frozenset()
        self._vocab_size = 0
        self._engines: dict[str, Engine] = {}
        self._stop_ids_cache: dict[str, int | None] = {}
        self._ids = itertools.count()
        self._closed = False
        self._seed_warned = False

    # -- Backend API -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the model and start the greedy engine now rather than on the first request."""
        await self._engine("greedy")

    async def count_tokens(self, text: str) -> int:
        """Exact number of tokens `text` takes as a prompt (special tokens included, as in `prompt_tokens`)."""
        if self._tokenizer is None:
            await asyncio.to_thread(self._load_tokenizer)
        return len(self._encode(text))

    async def context_window(self) -> int:
        """The model's context length (`max_position_embeddings`), capped by the KV cache's capacity."""
        return self._window

    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk | Finish]:
        """Stream the completion of `request` (see the module docstring for stop strings and sampling)."""
        return self._stream(request)

    async def aclose(self) -> None:
        """Cancel in-flight requests and stop the engines. Safe to call twice."""
        self._closed = True
        if self._engines:
            await asyncio.to_thread(self._close_engines)

    # -- streaming -------------------------------------------------------------------------------

    async def _stream(self, request: GenerationRequest) -> AsyncIterator[Chunk | Finish]:
        params = request.params
        engine = await self._engine("greedy" if params.temperature == 0 else "sample")
        prompt_ids = self._encode(request.prompt)
        if not prompt_ids:
            raise BackendError(
                "the prompt is empty and the tokenizer adds no BOS token", request_id=request.request_id
            )
        max_new = self._max_new_tokens(len(prompt_ids), params, request.request_id)
        stop_token_ids = self._stop_token_ids(params.stop)
        mailbox = Mailbox(f"{request.request_id}#{next(self._ids)}", asyncio.get_running_loop())
        try:
            engine.submit(
                mailbox,
                prompt_ids,
                max_new_tokens=max_new,
                stop_token_ids=sorted(self._eos_ids | stop_token_ids),
                sampling=self._sampling_kwargs(params),
            )
        except EngineClosed as exc:
            raise ServerError(str(exc), request_id=request.request_id, retryable=False) from exc
        decoder = IncrementalDecoder(self._decode)
        matcher = StopMatcher(params.stop)
        seen = 0  # generated tokens processed so far
        unreported = 0  # tokens processed since the last chunk
        done = False
        try:
            while True:
                try:
                    output = await mailbox.get()
                except EngineClosed:  # the backend was closed under this stream
                    done = True
                    yield Finish(reason="cancelled", prompt_tokens=len(prompt_ids), completion_tokens=seen)
                    return
                except EngineDied as exc:
                    done = True
                    raise ServerError(str(exc), request_id=request.request_id, retryable=False) from exc
                if output.error is not None:
                    done = True
                    raise ServerError(
                        f"the embedded engine failed the request: {output.error}",
                        request_id=request.request_id,
                        retryable=False,
                    )
                tokens = output.generated_tokens
                finished = output.is_finished()
                emitted: list[str] = []
                matched: str | None = None
                eos = False
                while seen < len(tokens):
                    token = tokens[seen]
                    seen += 1
                    unreported += 1
                    if (
                        finished
                        and seen == len(tokens)
                        and token in self._eos_ids
                        and token not in stop_token_ids
                    ):
                        eos = True  # the end-of-sequence token is not text
                        break
                    text, matched = matcher.feed(decoder.push(token))
                    emitted.append(text)
                    if matched is not None:
                        break
                if matched is None and (finished or eos):
                    text, matched = matcher.feed(decoder.flush())
                    emitted.append(text)
                    if matched is None:
                        emitted.append(matcher.flush())
                text = "".join(emitted)
                if text:
                    yield Chunk(text, unreported)
                    unreported = 0
                if matched is not None or finished:
                    done = True
                    if matched is not None:
                        if not finished:
                            engine.cancel(mailbox.engine_id)
                        reason: Literal["stop", "eos", "length"] = "stop"
                    else:
                        reason = "eos" if eos else "length"
                    cached = engine.release(mailbox.engine_id)
                    yield Finish(
                        reason=reason,
                        matched_stop=matched,
                        prompt_tokens=len(prompt_ids),
                        completion_tokens=seen,
                        cached_tokens=cached,
                        token_ids=tuple(tokens[:seen]),
                    )
                    return
        finally:
            if not done:  # the consumer cancelled or closed the stream
                engine.cancel(mailbox.engine_id)
            engine.release(mailbox.engine_id)

    # -- request preparation -----------------------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=self._add_special_tokens)

    def _decode(self, ids: list[int]) -> str:
        # Special tokens stay: dialect tags may be special tokens of a trained tokenizer.
        return self._tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _max_new_tokens(self, prompt_tokens: int, params: SamplingParams, request_id: str) -> int:
        room = self._window - prompt_tokens
        if room < 1:
            raise ContextWindowExceeded(
                f"the prompt ({prompt_tokens} tokens) fills the {self._window}-token context window",
                request_id=request_id,
            )
        return room if params.max_tokens is None else min(params.max_tokens, room)

    def _stop_token_ids(self, stops: tuple[str, ...]) -> frozenset[int]:
        """Token ids of stop strings that are exactly one token (and decode back to the same string)."""
        ids: set[int] = set()
        for stop in stops:
            if stop not in self._stop_ids_cache:
                encoded = self._tokenizer.encode(stop, add_special_tokens=False)
                single = len(encoded) == 1 and self._decode(encoded) == stop
                self._stop_ids_cache[stop] = encoded[0] if single else None
            token = self._stop_ids_cache[stop]
            if token is not None:
                ids.add(token)
        return frozenset(ids)

    def _sampling_kwargs(self, params: SamplingParams) -> dict[str, Any]:
        if params.seed is not None and not self._seed_warned:
            self._seed_warned = True
            logger.warning(
                "the embedded engine has no per-request seed: SamplingParams.seed is ignored "
                "(seed the backend with EmbeddedBackend(seed=...))"
            )
        if params.temperature == 0:
            return {}
        top_k = self._vocab_size if params.top_k is None else min(params.top_k, self._vocab_size)
        return {"temperature": float(params.temperature), "top_p": float(params.top_p), "top_k": int(top_k)}

    # -- loading ---------------------------------------------------------------------------------

    async def _engine(self, mode: str) -> Engine:
        if self._closed:
            raise BackendError("the embedded backend is closed")
        engine = self._engines.get(mode)
        if engine is None:
            engine = await asyncio.to_thread(self._start_engine, mode)
        return engine

    def _load_tokenizer(self) -> None:
        with self._lock:
            if self._tokenizer is not None:
                return
            from transformers import AutoTokenizer

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot load the tokenizer in {str(self.path)!r}: {exc}") from exc

    def _load(self) -> None:
        self._load_tokenizer()
        with self._lock:
            if self._model is not None:
                return
            import torch
            from transformers import AutoModelForCausalLM

            if self._torch_threads is not None:
                torch.set_num_threads(self._torch_threads)
            try:
                model: Any = AutoModelForCausalLM.from_pretrained(
                    self.path, local_files_only=True, dtype=getattr(torch, self._dtype)
                )
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot load the model weights in {str(self.path)!r}: {exc}") from exc
            try:
                model.to(self._device).eval()
            except (RuntimeError, ValueError) as exc:
                raise ConfigError(f"cannot move the model to device {self._device!r}: {exc}") from exc
            tokenizer = self._tokenizer
            eos: set[int] = set()
            for source in (
                model.generation_config.eos_token_id,
                model.config.eos_token_id,
                tokenizer.eos_token_id,
            ):
                if isinstance(source, int):
                    eos.add(source)
                elif source:
                    eos.update(int(x) for x in source)
            self._eos_ids = frozenset(x for x in eos if x >= 0)
            self._vocab_size = int(model.get_output_embeddings().out_features)
            self._model = model

    def _start_engine(self, mode: str) -> Engine:
        self._load()
        with self._lock:
            engine = self._engines.get(mode)
            if engine is not None:
                return engine
            if self._closed:
                raise BackendError("the embedded backend is closed")
            from transformers import ContinuousBatchingConfig, GenerationConfig

            common = {
                "max_new_tokens": self._window,
                "eos_token_id": sorted(self._eos_ids) or -1,
                "pad_token_id": self._tokenizer.pad_token_id,
            }
            if mode == "greedy":
                generation_config = GenerationConfig(do_sample=False, **common)
            else:
                # Warpers exist only when their defaults are not neutral; every request sets its own values.
                generation_config = GenerationConfig(
                    do_sample=True, temperature=0.5, top_p=0.5, top_k=self._vocab_size, **common
                )
            cb_config = ContinuousBatchingConfig(
                allow_block_sharing=self._prefix_sharing,
                page_size=self._page_size,
                num_blocks=self._num_blocks,
                max_batch_tokens=self._max_batch_tokens,
                max_requests_per_batch=self._max_requests_per_batch,
                per_request_processors=mode == "sample",
                seed=self._seed,
            )
            engine = Engine(self._model, generation_config, cb_config, label=mode)
            try:
                engine.start()
            except (MemoryError, ValueError) as exc:
                raise ConfigError(
                    f"cannot start the embedded engine: {exc} (lower num_blocks or max_batch_tokens)"
                ) from exc
            self._engines[mode] = engine
            if not engine.prefix_sharing and self.capabilities.prefix_cache:
                self.capabilities = Capabilities(
                    token_counts=True, tokenizer=True, prefix_cache=False, extra=dict(self.capabilities.extra)
                )
            return engine

    def _close_engines(self) -> None:
        with self._lock:  # waits for an engine that is starting
            engines = list(self._engines.values())
            self._engines.clear()
        for engine in engines:
            engine.close()

    def __repr__(self) -> str:
        return f"EmbeddedBackend({str(self.path)!r}, device={self._device!r}, dtype={self._dtype!r})"
