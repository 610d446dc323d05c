import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spawnjoin.tasks.countdown import apr, make_split, sos_plus
from training.tokenizer import PHRASES, build_tokenizer, save_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def test_special_tokens(tok):
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    ids = tok("Moving to Node #0\n")["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok("done<eos>", add_special_tokens=False)["input_ids"][-1] == tok.eos_token_id
    assert len(tok) < 200


@pytest.mark.parametrize("phrase", PHRASES)
def test_keywords_are_single_tokens(tok, phrase):
    assert len(tok(phrase, add_special_tokens=False)["input_ids"]) == 1


def test_digits_are_split_one_per_token(tok):
    assert tok.convert_ids_to_tokens(tok("12345", add_special_tokens=False)["input_ids"]) == list("12345")
    line = "Exploring Operation: 44-14=30, Resulting Numbers: [5, 4, 30]\n"
    assert tok.convert_ids_to_tokens(tok(line, add_special_tokens=False)["input_ids"]) == [
        "Exploring Operation: ", "4", "4", "-", "1", "4", "=", "3", "0", ", Resulting Numbers: [",
        "5", ", ", "4", ", ", "3", "0", "]\n",
    ]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), numbers=st.sampled_from([3, 4]), beam=st.integers(1, 5),
       style=st.sampled_from(["apr", "sos"]), budget=st.booleans())
def test_round_trip_on_solver_output(tok, seed, numbers, beam, style, budget):
    problem = make_split("validation", 1, numbers=numbers, seed=seed)[0]
    if style == "apr":
        tree = apr(problem, beam_size=beam, seed=seed, sub_call_budget=budget)
    else:
        tree = sos_plus(problem, beam_size=beam, seed=seed, token_budget=1024 if budget else None)
    for _, _, call in tree.calls():
        for text in (call.context, call.target, call.text, call.text + "<eos>"):
            ids = tok(text)["input_ids"]
            assert tok.unk_token_id not in ids
            assert tok.decode(ids, skip_special_tokens=True) == text.removesuffix("<eos>")
            bare = tok(text, add_special_tokens=False)["input_ids"]
            assert tok.decode(bare) == text
        # the prompt's tokens are a prefix of the whole sequence's: SFT can mask the prompt by length
        assert tok(call.text)["input_ids"][: len(tok(call.context)["input_ids"])] == tok(call.context)["input_ids"]


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=string.printable, max_size=200))
def test_round_trip_on_any_ascii(tok, text):
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_sequences_are_shorter_than_characters(tok):
    tree = apr(make_split("validation", 1)[0], beam_size=3, seed=0)
    for _, _, call in tree.calls():
        assert len(tok(call.text)["input_ids"]) < 0.4 * len(call.text)


def test_save_and_reload(tmp_path, tok):
    from transformers import AutoTokenizer

    save_tokenizer(tmp_path)
    assert (tmp_path / "tokenizer.json").exists() and (tmp_path / "tokenizer_config.json").exists()
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = apr(make_split("validation", 1)[0], beam_size=3, seed=0).root.text
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert again.decode(again(text)["input_ids"], skip_special_tokens=True) == text
    assert again.eos_token == "<eos>" and again.pad_token == "<pad>"
