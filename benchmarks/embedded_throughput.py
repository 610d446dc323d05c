"""Throughput of the embedded engine against plain `model.generate`, on CPU.

The same 64 greedy requests (prompts of 16 to 256 tokens, 64 new tokens each) go through:

  (a)  `EmbeddedBackend`, all 64 streamed concurrently (continuous batching + asyncio bridge + detokenizing);
  (a0) the same continuous-batching engine fed the token ids directly (no asyncio, no detokenizing), to show
       what the bridge costs;
  (b)  one `model.generate` call per request, one after the other;
  (c)  padded batched `model.generate`, batches of 16 and of 64 (left padding).

The model is a random ~5M-parameter Llama built from a config (hidden 256, 6 layers, 8 heads, FFN 768) with
a locally trained byte-level BPE tokenizer. Its end-of-sequence token can never win an argmax (zero output
row, and two opposite rows guarantee a positive logit), so every request generates exactly 64 tokens in
every method. Greedy outputs of (a) and (c) are compared with (b). The methods take turns within each
repetition (so a change in the machine's load hits them alike); prints tokens/s (medians of `--repeat`
repetitions; model loading and engine start excluded) and the medians of the per-repetition ratios.
Target (issue 3): (a) >= 3x (b).

    python benchmarks/embedded_throughput.py [--threads 2] [--dtype float32] [--repeat 3]
    python benchmarks/embedded_throughput.py --sweep      # (a) only: requests per batch x dtype
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    ContinuousBatchingConfig,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as hf_logging

from spawnjoin.backends.base import Chunk, Finish, GenerationRequest, SamplingParams
from spawnjoin.backends.embedded import EmbeddedBackend

REQUESTS = 64
NEW_TOKENS = 64
_VOCABULARY = (
    "the quick brown fox jumps over lazy dog reach with using and spawn join thread result answer "
    "node search level moving current state operations goal reached no solution found"
)
WORDS = _VOCABULARY.split()


def build_model(out: Path) -> None:
    """Write the benchmark model and tokenizer to `out` (random weights, seed 0)."""
    corpus = [" ".join(WORDS), "0123456789 + - * / = ( ) [ ] , : #", "Bonjour, ça va ? naïve café"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<eos>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>", pad_token="<pad>")
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=1024,
        initializer_range=0.1,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        weight = model.get_output_embeddings().weight
        weight[fast.eos_token_id] = 0.0
        weight[fast.pad_token_id] = 0.0
        weight[3] = -weight[4]
    model.save_pretrained(out)
    fast.save_pretrained(out)


def make_prompts(tokenizer, seed: int = 0) -> list[str]:
    """64 prompts whose lengths spread evenly over 16..256 tokens (shuffled)."""
    rng = random.Random(seed)
    targets = [16 + (256 - 16) * i // (REQUESTS - 1) for i in range(REQUESTS)]
    rng.shuffle(targets)
    prompts = []
    for target in targets:
        words: list[str] = []
        while len(tokenizer.encode(" ".join(words))) < target:
            words.append(rng.choice(WORDS))
        prompts.append(" ".join(words))
    return prompts


# -- the methods ----------------------------------------------------------------------------------


async def run_backend(backend: EmbeddedBackend, prompts: list[str]) -> tuple[float, list[str]]:
    async def one(i: int, prompt: str) -> str:
        request = GenerationRequest(
            prompt=prompt, params=SamplingParams(max_tokens=NEW_TOKENS), request_id=f"bench-{i}"
        )
        pieces = []
        async for item in backend.stream(request):
            if isinstance(item, Chunk):
                pieces.append(item.text)
            else:
                assert isinstance(item, Finish) and item.completion_tokens == NEW_TOKENS, item
        return "".join(pieces)

    start = time.perf_counter()
    texts = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    return time.perf_counter() - start, list(texts)


async def loop_lag(stop: asyncio.Event, period: float = 0.01) -> float:
    """Largest delay (seconds) of a `period` sleep on the event loop until `stop` is set."""
    worst = 0.0
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(period)
        worst = max(worst, time.perf_counter() - start - period)
    return worst


def run_engine_alone(model, ids: list[list[int]], settings: dict) -> float:
    """(a0): the same requests straight into a continuous-batching manager; engine start not timed."""
    config = GenerationConfig(
        do_sample=False, max_new_tokens=NEW_TOKENS, eos_token_id=model.config.eos_token_id
    )
    cb = ContinuousBatchingConfig(allow_block_sharing=True, **settings)
    with model.continuous_batching_context_manager(
        generation_config=config, continuous_batching_config=cb
    ) as m:
        start = time.perf_counter()
        for i, prompt in enumerate(ids):
            m.add_request(prompt, request_id=f"r{i}", max_new_tokens=NEW_TOKENS)
        finished = 0
        while finished < len(ids):
            output = m.get_result(timeout=60)
            assert output is not None and len(output.generated_tokens) == NEW_TOKENS, output
            finished += 1
        return time.perf_counter() - start


def run_sequential(model, tokenizer, ids: list[list[int]]) -> tuple[float, list[str]]:
    texts = []
    start = time.perf_counter()
    with torch.no_grad():
        for prompt in ids:
            out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=NEW_TOKENS)
            new = out[0, len(prompt) :].tolist()
            assert len(new) == NEW_TOKENS
            texts.append(tokenizer.decode(new, skip_special_tokens=False, clean_up_tokenization_spaces=False))
    return time.perf_counter() - start, texts


def run_padded(model, tokenizer, ids: list[list[int]], batch: int) -> tuple[float, list[str]]:
    pad = tokenizer.pad_token_id
    texts = []
    start = time.perf_counter()
    with torch.no_grad():
        for at in range(0, len(ids), batch):
            group = ids[at : at + batch]
            width = max(len(p) for p in group)
            input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in group])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in group])
            out = model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                do_sample=False,
                max_new_tokens=NEW_TOKENS,
                pad_token_id=pad,
            )
            for row in out[:, width:].tolist():
                assert len(row) == NEW_TOKENS
                texts.append(
                    tokenizer.decode(row, skip_special_tokens=False, clean_up_tokenization_spaces=False)
                )
    return time.perf_counter() - start, texts


# -- driver ---------------------------------------------------------------------------------------


async def measure_backend(backend: EmbeddedBackend, prompts: list[str]) -> tuple[float, list[str], float]:
    """One run of (a): elapsed seconds, texts, and the event loop's worst lag while streaming."""
    stop = asyncio.Event()
    probe = asyncio.create_task(loop_lag(stop))
    elapsed, texts = await run_backend(backend, prompts)
    stop.set()
    return elapsed, texts, await probe


def engine_settings(backend: EmbeddedBackend) -> dict:
    """The engine settings the backend resolved (for running `generate_batch` alike)."""
    return {
        "max_batch_tokens": backend._max_batch_tokens,
        "num_blocks": backend._num_blocks,
        "page_size": backend._page_size,
        "max_requests_per_batch": backend._max_requests_per_batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads for every method")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--max-batch-tokens", type=int, default=None, help="default: the backend's")
    parser.add_argument("--num-blocks", type=int, default=None, help="default: the backend's")
    parser.add_argument("--page-size", type=int, default=None, help="default: the backend's")
    parser.add_argument("--max-requests-per-batch", type=int, default=None, help="default: the backend's")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; medians are printed")
    parser.add_argument("--skip-padded", action="store_true")
    parser.add_argument("--sweep", action="store_true", help="only (a), over requests per batch x dtype")
    parser.add_argument("--model-dir", type=Path, default=None, help="reuse a built model directory")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or Path(tmp)
        if not (model_dir / "config.json").exists():
            build_model(model_dir)
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        prompts = make_prompts(tokenizer)
        ids = [tokenizer.encode(p) for p in prompts]
        lengths = sorted(len(i) for i in ids)
        settings: dict = {"dtype": args.dtype, "torch_threads": args.threads}
        for key in ("max_batch_tokens", "num_blocks", "page_size", "max_requests_per_batch"):
            if getattr(args, key) is not None:
                settings[key] = getattr(args, key)

        if args.sweep:
            for dtype in ("float32", "bfloat16"):
                for per_batch in (8, 16, 32, 64):
                    trial = settings | {"dtype": dtype, "max_requests_per_batch": per_batch}
                    backend = EmbeddedBackend(model_dir, **trial)
                    asyncio.run(backend.start())
                    runs = [asyncio.run(measure_backend(backend, prompts))[0] for _ in range(args.repeat)]
                    asyncio.run(backend.aclose())
                    rate = REQUESTS * NEW_TOKENS / statistics.median(runs)
                    print(
                        f"  (a) {dtype:8s} max_requests_per_batch={per_batch:3d}: {rate:7.0f} tok/s",
                        flush=True,
                    )
            return

        backend = EmbeddedBackend(model_dir, **settings)
        print(
            f"{REQUESTS} requests, prompts {lengths[0]}-{lengths[-1]} tokens (median {lengths[len(lengths) // 2]}), "
            f"{NEW_TOKENS} new tokens each, greedy; torch threads {args.threads}, dtype {args.dtype}; "
            f"engine {engine_settings(backend)}",
            flush=True,
        )
        asyncio.run(backend.start())
        asyncio.run(run_backend(backend, prompts[:4]))  # warm-up
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, local_files_only=True, dtype=getattr(torch, args.dtype)
        ).eval()

        # The methods take turns within each repetition, so a change in the machine's load hits them alike;
        # ratios are taken within a repetition, then their median is reported.
        names = {
            "a": "(a) embedded backend, 64 concurrent",
            "a0": "(a0) same engine, no asyncio/detokenizer",
            "b": "(b) generate, one request at a time",
        }
        if not args.skip_padded:
            names |= {
                "c16": "(c) padded generate, batches of 16",
                "c64": "(c) padded generate, batches of 64",
            }
        elapsed: dict[str, list[float]] = {key: [] for key in names}
        texts: dict[str, list[str]] = {}
        lags = []
        for rep in range(args.repeat):
            seconds, texts["a"], lag = asyncio.run(measure_backend(backend, prompts))
            elapsed["a"].append(seconds)
            lags.append(lag)
            elapsed["a0"].append(run_engine_alone(model, ids, engine_settings(backend)))
            seconds, texts["b"] = run_sequential(model, tokenizer, ids)
            elapsed["b"].append(seconds)
            for key, batch in (("c16", 16), ("c64", 64)):
                if key in names:
                    seconds, texts[key] = run_padded(model, tokenizer, ids, batch)
                    elapsed[key].append(seconds)
            line = ", ".join(
                f"({key}) {REQUESTS * NEW_TOKENS / runs[-1]:.0f}" for key, runs in elapsed.items()
            )
            print(f"  repetition {rep + 1}: tokens/s {line}", flush=True)
        asyncio.run(backend.aclose())

        print(f"(a) event loop: worst delay of a 10 ms sleep while streaming: {max(lags) * 1000:.0f} ms")
        for key in texts:
            if key != "b":
                same = sum(x == y for x, y in zip(texts[key], texts["b"], strict=True))
                print(f"greedy outputs identical to (b): ({key}) {same}/{REQUESTS}")
        a, b = elapsed["a"], elapsed["b"]
        print(
            f"{'method':44s} {'tokens/s':>9s} {'vs (b)':>7s} {'(a) vs it':>10s}   (medians of {args.repeat})"
        )
        for key, runs in elapsed.items():
            rate = REQUESTS * NEW_TOKENS / statistics.median(runs)
            vs_b = statistics.median(bs / x for x, bs in zip(runs, b, strict=True))
            a_vs = statistics.median(x / sa for x, sa in zip(runs, a, strict=True))
            print(f"{names[key]:44s} {rate:9.0f} {vs_b:6.2f}x {a_vs:9.2f}x")


if __name__ == "__main__":
    main()
