"""`spawnjoin-train probe`: the root's first-step reading and its spawn decision, on a tiny local model."""

from __future__ import annotations

import json
import math

import pytest

from spawnjoin.tasks.countdown import apr, make_split
from spawnjoin.tasks.countdown.format import SPAWN_OPEN
from training.cli import main
from training.probe import _reads_state, _sequence_logprob, child_prompt

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def countdown_model(tmp_path_factory):
    from transformers import LlamaForCausalLM

    from training.model_configs import build_config
    from training.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = build_config("tiny", vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config).eval()
    path = tmp_path_factory.mktemp("probe-model")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, model, tokenizer


def test_sequence_logprob_is_the_models_next_token_distribution(countdown_model):
    _, model, tokenizer = countdown_model
    context = "Moving to Node #0\nCurrent State: 24:[4, 9, 3], Operations: []\n"
    vocab = [t for t, i in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
             if i not in tokenizer.all_special_ids]
    probs = {t: math.exp(_sequence_logprob(model, tokenizer, context, t)) for t in vocab}
    ids = tokenizer(context).input_ids
    greedy = model.generate(torch.tensor([ids]), max_new_tokens=1, do_sample=False,
                            pad_token_id=tokenizer.pad_token_id)[0, -1]
    assert max(probs, key=probs.get) == tokenizer.convert_ids_to_tokens(int(greedy))
    assert 0.9 < sum(probs.values()) <= 1.0 + 1e-4  # special tokens hold the rest
    # a two-token continuation is the product of its steps
    two = _sequence_logprob(model, tokenizer, context, "Mo")
    assert two == pytest.approx(_sequence_logprob(model, tokenizer, context, "M")
                                + _sequence_logprob(model, tokenizer, context + "M", "o"), abs=1e-4)


def test_first_step_reading_is_judged_against_the_prompts_state():
    prompt = "Moving to Node #0\nCurrent State: 24:[15, 8, 66], Operations: []\n"
    assert _reads_state(prompt, "Exploring Operation: 66-8=58, Resulting Numbers: [15, 58]\n") is True
    assert _reads_state(prompt, "Exploring Operation: 86-6=80, Resulting Numbers: [15, 80]\n") is False
    assert _reads_state(prompt, "") is None
    child = child_prompt(prompt)
    assert child.startswith("Moving to Node #0,0\n") and "Operations: ['1+1=2']" in child and "[15, 8, 66]" in child


def test_probe_cli_writes_a_report(countdown_model, tmp_path, capsys):
    path, _, _ = countdown_model
    out = tmp_path / "probe.json"
    assert main(["probe", str(path), "--numbers", "3", "--n", "4", "--beam", "3", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report == json.loads(capsys.readouterr().out)
    spawning = sum(SPAWN_OPEN in apr(p, beam_size=3, sub_call_beam_size=3, spawn_prob=1.0, seed=i).root.calls[0].target
                   for i, p in enumerate(make_split("test", 4, numbers=3)))
    spawn = report["spawn_after_solver_lines"]
    assert spawn["problems"] == spawning > 0
    assert 0 <= spawn["p_spawn_median"] <= 1 and 0 <= spawn["spawn_more_likely_than_move"] <= 1
    assert set(report["first_step_reads_state"]) == {"root", "child_prompt"}
    with pytest.raises(SystemExit):
        main(["probe", str(path), "--split", "train"])
