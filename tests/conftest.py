"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

# Text the tiny tokenizer is trained on: ASCII words, digits, the dialects' tags and multi-byte characters,
# so byte-level merges give tokens of several characters and characters of several tokens.
_TOKENIZER_CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Countdown: reach 24 with [4, 6, 9, 3] using + - * / and ( ) = 12345 67890",
    "<Calling Sub Searches> <Start Sub Search 0 at level 1> Moving to Node #0,1 <End Calling Sub Searches>",
    "<spawn> child </spawn> <join> parent result </join> Goal Reached",
    "Bonjour, ça va ? naïve café — ünïcödé ✓ 東京",
]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama (about 0.1M parameters) with a byte-level BPE tokenizer, saved locally.

    Built from a config, nothing downloaded. The end-of-sequence token can never win an argmax: its
    output row is zero (logit 0) and two other rows are opposite (one of their logits is > 0), so greedy
    generation always runs to `max_tokens` unless a test configures another end-of-sequence token.
    """
    torch = pytest.importorskip("torch")
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")

    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=["<eos>", "<pad>"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_TOKENIZER_CORPUS * 8, trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<eos>", pad_token="<pad>"
    )

    config = transformers.LlamaConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=0.2,  # peaked logits: varied text, and no near-ties between engines
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(1234)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        weight = model.get_output_embeddings().weight
        weight[fast.eos_token_id] = 0.0
        weight[fast.pad_token_id] = 0.0
        weight[3] = -weight[4]
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path
