"""The embedded engine on a tiny random Llama: streaming, stops, lengths, cancellation, concurrency, errors.

The strongest check is that greedy output through the continuous-batching engine is token for token what
`model.generate` produces for the same prompt, alone or among 32 concurrent requests.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from spawnjoin._exceptions import BackendError, ConfigError, ContextWindowExceeded  # noqa: E402
from spawnjoin.backends import embedded  # noqa: E402
from spawnjoin.backends._embedded_text import IncrementalDecoder, StopMatcher  # noqa: E402
from spawnjoin.backends.base import Chunk, Finish  # noqa: E402
from spawnjoin.backends.embedded import EmbeddedBackend  # noqa: E402
from tests.servers.helpers import collect, make_request  # noqa: E402

PAGE = 16
PROMPTS = [
    "The quick brown fox",
    "Countdown: reach 24 with [4, 6, 9, 3]",
    "<Calling Sub Searches> <Start Sub Search 0 at level 1> Moving to Node #0,1",
    "Bonjour, ça va ? naïve café",
    "Goal Reached",
    "12345 67890 " * 6,
]


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path):
    b = EmbeddedBackend(tiny_model_dir, page_size=PAGE, max_batch_tokens=128, num_blocks=256)
    yield b
    asyncio.run(b.aclose())


Reference = Callable[[str, int], tuple[list[int], str]]


@pytest.fixture(scope="module")
def hf(tiny_model_dir: Path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True).eval()
    return tokenizer, model


@pytest.fixture(scope="module")
def reference(hf) -> Reference:
    """Greedy `model.generate` output (ids, text) for a prompt and a number of new tokens."""
    tokenizer, model = hf
    memo: dict[tuple[str, int], tuple[list[int], str]] = {}

    def greedy(prompt: str, max_new_tokens: int) -> tuple[list[int], str]:
        if (prompt, max_new_tokens) not in memo:
            ids = tokenizer.encode(prompt)
            with torch.no_grad():
                out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=max_new_tokens)
            new = out[0, len(ids) :].tolist()
            memo[prompt, max_new_tokens] = (new, decode(tokenizer, new))
        return memo[prompt, max_new_tokens]

    return greedy


def decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def printable_stop(tokenizer, ids: list[int], length: int, start_token: int) -> tuple[str, int]:
    """A stop string of `length` printable characters spanning a token boundary, and the number of tokens
    after which it is first complete."""
    text = decode(tokenizer, ids)
    for k in range(start_token, len(ids)):
        boundary = len(decode(tokenizer, ids[:k]))
        for at in range(max(0, boundary - length + 1), boundary):
            stop = text[at : at + length]
            if len(stop) == length and stop.isprintable() and "\ufffd" not in stop:
                done = next(n for n in range(1, len(ids) + 1) if stop in decode(tokenizer, ids[:n]))
                return stop, done
    raise AssertionError("no printable stop string in the reference output")


# -- greedy correctness ------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", PROMPTS)
async def test_greedy_stream_equals_model_generate(backend, reference: Reference, prompt: str) -> None:
    ids, text = reference(prompt, 24)
    got = await collect(backend, make_request(prompt, max_tokens=24))
    assert got.text == text
    assert got.finish.reason == "length"
    assert got.finish.completion_tokens == 24
    assert list(got.finish.token_ids) == ids  # the sampled ids, for training on exactly these tokens
    assert got.finish.prompt_tokens == await backend.count_tokens(prompt)
    assert got.chunk_tokens <= 24
    assert all(c.text for c in got.chunks)


async def test_chunks_concatenate_to_the_final_decode_token_by_token(backend, hf) -> None:
    tokenizer, _ = hf
    got = await collect(backend, make_request("Bonjour, ça va ? naïve café — ünïcödé ✓ 東京", max_tokens=60))
    # The streamed pieces never split a character that the whole decode keeps together.
    assert len(got.chunks) > 10
    ids = tokenizer.encode("Bonjour, ça va ? naïve café — ünïcödé ✓ 東京")
    with torch.no_grad():
        out = hf[1].generate(torch.tensor([ids]), do_sample=False, max_new_tokens=60)
    assert got.text == decode(tokenizer, out[0, len(ids) :].tolist())


def test_incremental_decoder_keeps_multibyte_characters_whole(hf) -> None:
    tokenizer, _ = hf
    text = "ünïcödé ✓ 東京 and ascii"
    ids = tokenizer.encode(text)
    decoder = IncrementalDecoder(lambda x: decode(tokenizer, x))
    pieces = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_incremental_decoder_on_a_word_level_tokenizer() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "reach", "24", "with", "[4,", "6]", "Goal", "Reached"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer)
    ids = fast.encode("reach 24 with [4, 6] Goal Reached")
    decoder = IncrementalDecoder(lambda x: decode(fast, x))
    pieces = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert pieces[:3] == ["reach", " 24", " with"]
    assert "".join(pieces) == decode(fast, ids) == "reach 24 with [4, 6] Goal Reached"


# -- stops, lengths, end of sequence ---------------------------------------------------------------


async def test_stop_string_spanning_tokens_ends_the_text_before_it(backend, hf, reference: Reference) -> None:
    tokenizer, _ = hf
    prompt = PROMPTS[1]
    ids, text = reference(prompt, 40)
    stop, tokens_needed = printable_stop(tokenizer, ids, 3, start_token=8)
    got = await collect(backend, make_request(prompt, max_tokens=40, stop=(stop,)))
    assert got.finish.reason == "stop"
    assert got.finish.matched_stop == stop
    assert got.text == text[: text.find(stop)]
    # The stop begins in one token and ends in a later one, so its start was held back, never streamed.
    assert got.finish.completion_tokens == tokens_needed
    # The ids run to the token that completed the stop; its text may go past the stop, which the text drops.
    assert list(got.finish.token_ids) == ids[:tokens_needed]
    assert decode(tokenizer, ids[:tokens_needed]).startswith(got.text + stop)


async def test_first_completed_stop_wins_among_several(backend, hf, reference: Reference) -> None:
    tokenizer, _ = hf
    prompt = PROMPTS[0]
    ids, text = reference(prompt, 40)
    early, _ = printable_stop(tokenizer, ids, 2, start_token=5)
    late, _ = printable_stop(tokenizer, ids, 2, start_token=20)
    if text.find(late) <= text.find(early):
        pytest.skip("the reference text has no two distinct stops in order")
    got = await collect(backend, make_request(prompt, max_tokens=40, stop=(late, "never-there", early)))
    assert got.finish.matched_stop == early
    assert got.text == text[: text.find(early)]


async def test_single_token_stop_is_also_a_stop_token(backend, hf, reference: Reference) -> None:
    tokenizer, _ = hf
    prompt = PROMPTS[2]
    ids, text = reference(prompt, 40)
    for token in ids[4:]:
        stop = decode(tokenizer, [token])
        if stop.isprintable() and stop.strip() and tokenizer.encode(stop) == [token]:
            break
    else:
        pytest.skip("no printable single-token stop in the reference output")
    assert backend._stop_token_ids((stop, "two tokens at least")) == {token}
    got = await collect(backend, make_request(prompt, max_tokens=40, stop=(stop,)))
    assert got.finish.reason == "stop"
    assert got.finish.matched_stop == stop
    assert got.text == text[: text.find(stop)]


async def test_max_tokens_ends_with_length(backend, reference: Reference) -> None:
    _, text = reference(PROMPTS[3], 5)
    got = await collect(backend, make_request(PROMPTS[3], max_tokens=5))
    assert (got.text, got.finish.reason, got.finish.completion_tokens) == (text, "length", 5)


async def test_end_of_sequence_token_ends_with_eos_and_is_not_text(
    tiny_model_dir: Path, tmp_path: Path, hf, reference: Reference
) -> None:
    tokenizer, _ = hf
    ids, _ = reference(PROMPTS[0], 30)
    eos = next(t for k, t in enumerate(ids) if k >= 3 and t not in ids[:k])
    model_dir = tmp_path / "eos-model"
    shutil.copytree(tiny_model_dir, model_dir)
    for name in ("config.json", "generation_config.json"):
        data = json.loads((model_dir / name).read_text())
        data["eos_token_id"] = eos
        (model_dir / name).write_text(json.dumps(data))
    async with EmbeddedBackend(model_dir, page_size=PAGE, num_blocks=64) as b:
        got = await collect(b, make_request(PROMPTS[0], max_tokens=30))
    cut = ids.index(eos)
    assert got.finish.reason == "eos"
    assert got.finish.completion_tokens == cut + 1
    assert got.text == decode(tokenizer, ids[:cut])
    assert list(got.finish.token_ids) == ids[: cut + 1]  # the end-of-sequence token is an id, not text


async def test_unbounded_request_fills_the_context_window(backend, hf) -> None:
    tokenizer, _ = hf
    prompt = "12345 67890 " * 200
    n = len(tokenizer.encode(prompt))
    window = await backend.context_window()
    assert window == 512
    if n >= window:
        with pytest.raises(ContextWindowExceeded):
            await collect(backend, make_request(prompt))
        prompt = prompt[: len(prompt) * 500 // n]
        n = len(tokenizer.encode(prompt))
    got = await collect(backend, make_request(prompt))
    assert got.finish.reason == "length"
    assert got.finish.completion_tokens == window - n


# -- counts and prefix cache ------------------------------------------------------------------------


async def test_capabilities_count_tokens_and_prefix_cache(backend, hf) -> None:
    tokenizer, _ = hf
    assert backend.capabilities.token_counts and backend.capabilities.tokenizer
    assert backend.capabilities.prefix_cache
    shared = "<Calling Sub Searches> Moving to Node #0,1 Countdown: reach 24 with [4, 6, 9, 3] " * 3
    assert await backend.count_tokens(shared) == len(tokenizer.encode(shared))
    first = await collect(backend, make_request(shared + "child A", max_tokens=3))
    second = await collect(backend, make_request(shared + "child B", max_tokens=3))
    assert first.finish.cached_tokens is not None
    cached = second.finish.cached_tokens
    assert cached and cached % PAGE == 0
    assert cached >= (len(tokenizer.encode(shared)) - 2) // PAGE * PAGE - PAGE
    assert cached < second.finish.prompt_tokens


# -- sampling ---------------------------------------------------------------------------------------


async def test_per_request_sampling_runs_and_top_k_1_is_greedy(backend, reference: Reference) -> None:
    _, text = reference(PROMPTS[0], 20)
    greedy_like, sampled = await asyncio.gather(
        collect(backend, make_request(PROMPTS[0], max_tokens=20, temperature=1.0, top_k=1)),
        collect(backend, make_request(PROMPTS[0], max_tokens=20, temperature=0.8, top_p=0.9, seed=7)),
    )
    assert greedy_like.text == text
    assert sampled.finish.reason == "length" and sampled.finish.completion_tokens == 20
    assert set(backend._engines) >= {"sample"}


# -- cancellation and concurrency -------------------------------------------------------------------


def engine_holds(backend: EmbeddedBackend, request_id: str) -> bool:
    scheduler = backend._engines["greedy"]._manager.batch_processor.scheduler
    live = list(scheduler.active_requests) + list(scheduler.waiting_requests)
    return any(rid.startswith(request_id + "#") for rid in live)


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    for _ in range(int(timeout / 0.02)):
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


async def test_cancelling_the_consumer_cancels_the_engine_request(backend, reference: Reference) -> None:
    long = make_request(PROMPTS[4], max_tokens=400)
    started = asyncio.Event()
    chunks: list[Chunk] = []

    async def consume() -> None:
        async for item in backend.stream(long):
            assert isinstance(item, Chunk)
            chunks.append(item)
            if len(chunks) >= 3:
                started.set()

    task = asyncio.create_task(consume())
    other = asyncio.create_task(collect(backend, make_request(PROMPTS[5], max_tokens=30)))
    await asyncio.wait_for(started.wait(), 30)
    assert engine_holds(backend, long.request_id)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_until(lambda: not engine_holds(backend, long.request_id))
    done = await other
    assert done.text == reference(PROMPTS[5], 30)[1]
    assert len(chunks) < 400


async def test_closing_the_generator_cancels_the_engine_request(backend) -> None:
    request = make_request(PROMPTS[4], max_tokens=400)
    stream = backend.stream(request)
    first = await stream.__anext__()
    assert isinstance(first, Chunk)
    await stream.aclose()
    assert await wait_until(lambda: not engine_holds(backend, request.request_id))


async def test_32_concurrent_requests_match_their_solo_runs(backend, reference: Reference) -> None:
    prompts = [f"{PROMPTS[i % len(PROMPTS)]} #{i} " + "x" * (i % 7) for i in range(32)]
    lengths = [8 + i % 9 for i in range(32)]
    got = await asyncio.gather(
        *(collect(backend, make_request(p, max_tokens=n)) for p, n in zip(prompts, lengths, strict=True))
    )
    for prompt, n, result in zip(prompts, lengths, got, strict=True):
        assert result.text == reference(prompt, n)[1], prompt
        assert (result.finish.reason, result.finish.completion_tokens) == ("length", n)
    alone = await collect(backend, make_request(prompts[7], max_tokens=lengths[7]))
    assert alone.text == got[7].text


async def test_aclose_ends_open_streams_and_refuses_new_ones(tiny_model_dir: Path) -> None:
    b = EmbeddedBackend(tiny_model_dir, page_size=PAGE, num_blocks=64)
    started = asyncio.Event()
    items: list[Chunk | Finish] = []

    async def consume() -> None:
        async for item in b.stream(make_request(PROMPTS[0], max_tokens=500)):
            items.append(item)
            started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 30)
    await b.aclose()
    await asyncio.wait_for(task, 10)
    assert isinstance(items[-1], Finish) and items[-1].reason == "cancelled"
    await b.aclose()  # twice is fine
    with pytest.raises(BackendError, match="closed"):
        await collect(b, make_request(PROMPTS[0], max_tokens=2))


async def test_aclose_frees_the_kv_cache_without_a_garbage_collection(tiny_model_dir: Path) -> None:
    """A closed engine's cache pages go at once (tree GRPO builds an engine per step: a kept cache is a leak)."""
    import gc
    import weakref

    b = EmbeddedBackend(tiny_model_dir, page_size=PAGE, num_blocks=64)
    await collect(b, make_request(PROMPTS[1], max_tokens=3))
    (engine,) = b._engines.values()
    cache = engine._manager.batch_processor.cache
    assert engine.prefix_sharing  # the prefix probe, a closure stored on the cache, is installed
    gone = weakref.ref(cache)
    del cache, engine
    gc.disable()
    try:
        await b.aclose()
        assert gone() is None  # freed by reference counting, not left to a full collection
    finally:
        gc.enable()


# -- model directory errors -------------------------------------------------------------------------


def test_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        EmbeddedBackend(tmp_path / "nope")


def test_directory_without_weights_is_a_config_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    shutil.copy(tiny_model_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(ConfigError, match="no weights"):
        EmbeddedBackend(tmp_path)


def test_a_model_that_is_not_a_causal_lm_is_a_config_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    from transformers import T5Config

    T5Config(d_model=32, d_ff=64, num_layers=1, num_heads=2).save_pretrained(tmp_path)
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model_dir / name, tmp_path / name)
    with pytest.raises(ConfigError, match="not a causal language model"):
        EmbeddedBackend(tmp_path)


def test_missing_default_model_says_how_to_pass_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "DEFAULT_MODEL", "no-such-model")
    with pytest.raises(ConfigError, match=r"default model is not installed.*EmbeddedBackend\(model="):
        EmbeddedBackend()


def test_bad_options_are_config_errors(tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="dtype"):
        EmbeddedBackend(tiny_model_dir, dtype="float8")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="page_size"):
        EmbeddedBackend(tiny_model_dir, page_size=2)


def test_importing_spawnjoin_and_the_backend_module_does_not_import_torch() -> None:
    code = (
        "import sys, spawnjoin, spawnjoin.backends.embedded; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the pure helpers -------------------------------------------------------------------------------


def feed_all(matcher: StopMatcher, pieces: list[str]) -> tuple[list[str], str | None]:
    out = []
    for piece in pieces:
        text, matched = matcher.feed(piece)
        out.append(text)
        if matched:
            return out, matched
    out.append(matcher.flush())
    return out, None


@pytest.mark.parametrize(
    "pieces",
    [["ab<E", "nd>cd"], ["ab<", "E", "n", "d", ">", "cd"], ["ab<End>cd"], ["a", "b<End", ">"]],
)
def test_stop_matcher_holds_back_prefixes_and_cuts_at_the_stop(pieces: list[str]) -> None:
    out, matched = feed_all(StopMatcher(["<End>"]), pieces)
    assert matched == "<End>"
    assert "".join(out) == "ab"
    assert not any("<" in piece for piece in out)


def test_stop_matcher_releases_held_text_that_was_not_a_stop() -> None:
    matcher = StopMatcher(["<End>"])
    assert matcher.feed("x<En") == ("x", None)
    assert matcher.feed("try") == ("<Entry", None)
    assert matcher.feed("<") == ("", None)
    assert matcher.flush() == "<"


@pytest.mark.parametrize("pieces", [["xabcd"], ["x", "a", "b", "c", "d"], ["xab", "cd"]])
def test_stop_matcher_first_completed_match_wins_whatever_the_split(pieces: list[str]) -> None:
    out, matched = feed_all(StopMatcher(["abcd", "bc"]), pieces)
    assert (matched, "".join(out)) == ("bc", "xa")


# -- end to end through solve() ---------------------------------------------------------------------

QUESTION = "Sum 3+4 and 5+6.\n"
OUTLINES = "<Parallel>\n<Outlines>\n<Outline>1: 3+4</Outline>\n<Outline>2: 5+6</Outline>\n</Outlines>"


def weaver_script(request) -> str:
    """What the trained tiny model must write, as a scripted backend handler (threadweaver dialect)."""
    prompt = request.prompt
    if prompt == QUESTION:
        return OUTLINES
    if prompt.endswith("\n<Thread>\n1:"):
        return " 7</Thread>"
    if prompt.endswith("\n<Thread>\n2:"):
        return " 11</Thread>"
    if prompt.endswith("</Parallel>\n"):
        return "7, 11"
    raise AssertionError(f"unexpected prompt {prompt!r}")


def train_to_recite(tokenizer, pairs: list[tuple[str, str, bool]], out: Path) -> None:
    """Train a tiny Llama until greedy decoding reproduces every completion exactly; save it to `out`."""
    eos = tokenizer.eos_token_id
    sequences = [(tokenizer.encode(p), tokenizer.encode(c) + ([eos] if ends else [])) for p, c, ends in pairs]
    width = max(len(p) + len(c) for p, c in sequences)
    ids = torch.full((len(sequences), width), eos)
    labels = torch.full((len(sequences), width), -100)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, (p, c) in enumerate(sequences):
        ids[row, : len(p) + len(c)] = torch.tensor(p + c)
        labels[row, len(p) : len(p) + len(c)] = torch.tensor(c)
        mask[row, : len(p) + len(c)] = 1
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=512,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is faster, and much faster on a busy machine
    try:
        for step in range(400):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % 10 == 9:
                with torch.no_grad():
                    predicted = model(input_ids=ids, attention_mask=mask).logits[:, :-1].argmax(-1)
                target = labels[:, 1:]
                if bool(((predicted == target) | (target == -100)).all()):
                    break
        else:
            raise AssertionError("the tiny model did not learn to recite its script")
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


@pytest.mark.slow
async def test_solve_with_spawns_on_the_embedded_engine_matches_the_script(hf, tmp_path: Path) -> None:
    import spawnjoin
    from spawnjoin.backends.scripted import ScriptedBackend

    tokenizer, _ = hf
    scripted = ScriptedBackend(weaver_script)
    expected = await spawnjoin.solve(QUESTION, backend=scripted, dialect="threadweaver")
    assert expected.status == "done" and len(expected.trace.threads) == 3
    pairs = []
    for request in scripted.requests:
        out = weaver_script(request)
        stop = next((s for s in request.params.stop if s in out), None)
        pairs.append((request.prompt, out[: out.index(stop) + len(stop)] if stop else out, stop is None))
    train_to_recite(tokenizer, pairs, tmp_path)

    async with EmbeddedBackend(tmp_path, page_size=PAGE, num_blocks=64) as b:
        got = await spawnjoin.solve(QUESTION, backend=b, dialect="threadweaver")

    assert got.status == "done", got.error
    assert (got.text, got.answer) == (expected.text, expected.answer)
    want, have = expected.trace, got.trace
    assert [t.id for t in have.walk()] == [t.id for t in want.walk()] == ["0", "0.0", "0.1"]
    for mine, theirs in zip(have.walk(), want.walk(), strict=True):
        assert mine.prompt == theirs.prompt
        assert [(c.context, c.text, c.finish_reason, c.matched_stop) for c in mine.calls] == [
            (c.context, c.text, c.finish_reason, c.matched_stop) for c in theirs.calls
        ]
        for call in mine.calls:
            # Exact counts from the engine: the prompt as tokenized, the tokens generated up to the stop
            # string or the end-of-sequence token (which counts as generated).
            assert call.prompt_tokens == len(tokenizer.encode(call.context))
            eos = 1 if call.finish_reason == "eos" else 0
            assert call.completion_tokens == len(tokenizer.encode(call.text)) + eos
    root_calls = have.root.calls
    assert [c.finish_reason for c in root_calls] == ["stop", "eos"]
    # Children continue the root's context: the engine serves their shared prefix from cached pages.
    children = [have.threads["0.0"], have.threads["0.1"]]
    assert all((c.calls[0].cached_tokens or 0) >= PAGE for c in children)
    metrics = got.metrics
    assert metrics.threads == 3 and metrics.spawns == 1
    assert metrics.total_tokens == sum(c.completion_tokens for t in have.walk() for c in t.calls)
    assert metrics.cached_tokens == sum(c.cached_tokens or 0 for t in have.walk() for c in t.calls)
