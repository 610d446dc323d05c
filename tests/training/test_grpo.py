"""Tree GRPO: rows of a thread tree, rewards, and one smoke step of `TreeGRPOTrainer` on a tiny model.

Rollouts come from a scripted backend that replays the APR solver's own demonstration trees (so trees really spawn
children), with the root's final call sabotaged on every other rollout so that rewards differ within a group.
"""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from spawnjoin.backends.scripted import ScriptedBackend  # noqa: E402
from spawnjoin.tasks.countdown import apr, make_split, root_prompt  # noqa: E402
from training.grpo import (  # noqa: E402
    malformed_spawn_reward,
    parallelism_bonus_reward,
    reward_functions,
    tree_correct_reward,
    tree_rows,
    tree_trainer_class,
)
from training.grpo_config import TreeGRPOConfig  # noqa: E402


def _solved_trees(n: int) -> list:
    trees = []
    for i, problem in enumerate(make_split("train", 200, numbers=3, seed=3)):
        tree = apr(problem, beam_size=3, sub_call_beam_size=3, spawn_prob=1.0, seed=i)
        if tree.solved and tree.num_children >= 2:
            trees.append(tree)
        if len(trees) == n:
            return trees
    raise AssertionError("the solver found too few spawning solved trees")


def _script(trees: list, *, sabotage: bool, misnumber: bool = False):
    """Handler answering every call of the given trees; every other root continuation is replaced by a dead end
    (`sabotage`), or every other spawn block of a root numbers its first sub search 1 instead of 0 (`misnumber`),
    which the APR dialect refuses as malformed."""
    answers = {call.context: call.target for tree in trees for thread in tree.threads() for call in thread.calls}
    roots = {tree.root.calls[0].context for tree in trees}
    counter = itertools.count()
    spawns = itertools.count()

    def handler(request):
        target = answers[request.prompt]
        if sabotage and "<Sub Searches>" in request.prompt and next(counter) % 2 == 1:
            return "No solution found.\n"
        if misnumber and request.prompt in roots and next(spawns) % 2 == 1:
            return target.replace("<Start Sub Search 0 at", "<Start Sub Search 1 at", 1)
        return target

    return handler


@pytest.fixture(scope="module")
def tokenizer():
    from training.tokenizer import build_tokenizer

    return build_tokenizer()


def _tiny_model(tokenizer):
    from transformers import LlamaForCausalLM

    from training.model_configs import build_config

    torch.manual_seed(0)
    config = build_config("tiny", vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config)


async def test_tree_rows_mask_join_text(tokenizer):
    import spawnjoin

    tree = _solved_trees(1)[0]
    backend = ScriptedBackend(_script([tree], sabotage=False))
    result = await spawnjoin.solve(root_prompt(tree.problem), backend=backend, dialect="apr",
                                   budget=spawnjoin.Budget(context_window=1024))
    root, extra = tree_rows(result.trace, tokenizer)
    children = sum(1 for t in result.trace.walk() if t.parent_id is not None)
    assert children >= 2
    # one spawn-block row for the root, one transcript row per child
    assert len(extra) == 1 + children
    assert len(root.completion_ids) == len(root.env_mask)
    masked = tokenizer.decode([t for t, m in zip(root.completion_ids, root.env_mask, strict=True) if m == 0])
    trained = tokenizer.decode([t for t, m in zip(root.completion_ids, root.env_mask, strict=True) if m == 1])
    assert masked.startswith("<Sub Searches>") and "<End Sub Searches>" in masked
    assert "<Sub Searches>" not in trained and "Goal Reached" in trained
    spawn_row = extra[0]
    assert tokenizer.decode(spawn_row.completion_ids).startswith("<Calling Sub Searches>")
    # the prompt plus the completion is the root's final transcript, token for token
    full = tokenizer.decode(root.prompt_ids + root.completion_ids, skip_special_tokens=True)
    assert full == result.text


async def test_rows_use_the_sampled_ids_and_fall_back_to_the_text_when_they_do_not_match(tokenizer):
    import spawnjoin
    from spawnjoin.dialects.apr import SPAWN_CLOSE

    tree = _solved_trees(1)[0]
    result = await spawnjoin.solve(root_prompt(tree.problem), backend=ScriptedBackend(_script([tree], sabotage=False)),
                                   dialect="apr", budget=spawnjoin.Budget(context_window=1024))
    calls = [c for t in result.trace.walk() for c in t.calls]
    assert all(c.token_ids is None for c in calls)  # the scripted backend reports no ids
    root_text, extra_text = tree_rows(result.trace, tokenizer)
    # What a trained engine samples: the stop string's token carries the newline after it.
    (close,) = tokenizer(SPAWN_CLOSE + "\n", add_special_tokens=False)["input_ids"]
    for c in calls:
        spawned = c.text.endswith(SPAWN_CLOSE)
        c.token_ids = tokenizer(c.text + ("\n" if spawned else ""), add_special_tokens=False)["input_ids"] + (
            [tokenizer.eos_token_id] if c.finish_reason == "eos" else [])
    root, extra = tree_rows(result.trace, tokenizer)
    spawn_rows = [r for r in extra if r.completion_ids[-1] == close]
    spawns = sum(len(t.spawns) for t in result.trace.walk())
    assert spawns >= 1 and len(spawn_rows) == spawns and len(extra) == len(extra_text)
    assert root == root_text  # the transcript keeps the text before each block: same tokens either way
    spelled = len(tokenizer(SPAWN_CLOSE, add_special_tokens=False)["input_ids"])
    trained = sum(sum(r.env_mask) for r in [root, *extra])
    assert spelled > 1 and trained == sum(sum(r.env_mask) for r in [root_text, *extra_text]) - spawns * (spelled - 1)
    # ids that do not decode to the call's text are not trusted: that call is tokenized from its text
    calls[0].token_ids = [tokenizer.eos_token_id - 1] * 3
    root_bad, _ = tree_rows(result.trace, tokenizer)
    assert root_bad == root_text


async def test_rows_of_an_embedded_solve_train_exactly_the_tokens_the_model_chose():
    """A greedy APR solve of the shipped model on the embedded engine: the rows train every generated token and
    nothing else, and each trained token is the model's own choice at its position. Re-tokenizing the text would
    spell out the spawn block's closing stop string, which the model emits as one token with its newline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import spawnjoin
    from spawnjoin.backends.base import SamplingParams
    from spawnjoin.backends.embedded import EmbeddedBackend
    from spawnjoin.tasks.countdown import parse_problem

    async with EmbeddedBackend(dtype="float32", torch_threads=1) as backend:  # the shipped model
        model_dir = backend.path
        problem = parse_problem("27 88 84 25 2")
        result = await spawnjoin.solve(root_prompt(problem), backend=backend, dialect="apr",
                                       budget=spawnjoin.Budget(context_window=1024, max_threads=16),
                                       sampling=SamplingParams(temperature=0))
    shipped = AutoTokenizer.from_pretrained(model_dir)
    root, extra = tree_rows(result.trace, shipped)
    rows = [root, *extra]
    assert result.metrics.threads > 2
    assert sum(sum(r.env_mask) for r in rows) == result.metrics.total_tokens
    (close,) = shipped("<End Calling Sub Searches>\n", add_special_tokens=False)["input_ids"]
    spawns = sum(len(t.spawns) for t in result.trace.walk())
    assert spawns >= 1 and sum(r.completion_ids[-1] == close for r in extra) == spawns
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    for row in rows:
        with torch.no_grad():
            logits = model(torch.tensor([row.prompt_ids + row.completion_ids])).logits[0, len(row.prompt_ids) - 1:-1]
        trained = torch.tensor(row.env_mask).bool()
        chosen = logits.gather(1, torch.tensor(row.completion_ids)[:, None])[:, 0]
        # greedy: each trained token's logit is the top one (up to the batched engine's float rounding)
        assert torch.all(logits.max(dim=1).values[trained] - chosen[trained] < 1e-3)


def test_rewards():
    assert tree_correct_reward([], [], tree_correct=[True, False]) == [1.0, 0.0]
    assert parallelism_bonus_reward([], [], [True, True], [100, 0], [25, 0]) == [0.75, 0.0]
    assert malformed_spawn_reward([], [], tree_malformed_spawns=[0, 1, 3]) == [0.0, -1.0, -1.0]
    funcs, weights = reward_functions(TreeGRPOConfig(output_dir="/tmp/x", parallel_bonus=0.2, malformed_penalty=0.5))
    assert funcs == [tree_correct_reward, parallelism_bonus_reward, malformed_spawn_reward]
    assert weights == [1.0, 0.2, 0.5]
    assert reward_functions(TreeGRPOConfig(output_dir="/tmp/x")) == ([tree_correct_reward], [1.0])
    with pytest.raises(ValueError, match="malformed_penalty"):
        TreeGRPOConfig(output_dir="/tmp/x", malformed_penalty=-1.0)


def test_malformed_spawns_are_counted_and_penalised(tokenizer, tmp_path):
    """A root whose spawn block is misnumbered ends with no children; the rollout reports it, and with
    `malformed_penalty` the tree's reward drops by the penalty although it fails anyway."""
    from datasets import Dataset

    from training.grpo import make_rollout_func

    trees = _solved_trees(2)
    prompts = [root_prompt(t.problem) for t in trees]
    cfg = TreeGRPOConfig(output_dir=str(tmp_path), num_generations=2, per_device_train_batch_size=4, max_steps=1,
                         context_window=1024, max_completion_length=1024, seed=0, malformed_penalty=0.5)
    funcs, weights = reward_functions(cfg)
    cfg.reward_weights = weights
    trainer = tree_trainer_class()(
        model=_tiny_model(tokenizer), reward_funcs=funcs, args=cfg,
        train_dataset=Dataset.from_dict({"prompt": prompts * 4}), processing_class=tokenizer,
        rollout_func=make_rollout_func(cfg, tokenizer, backend_factory=lambda _: ScriptedBackend(
            _script(trees, sabotage=False, misnumber=True))),
    )
    inputs = [{"prompt": p} for p in prompts for _ in range(2)]
    trainer._generate_and_score_completions(inputs)
    malformed = [x["tree_malformed_spawns"] for x in inputs]
    correct = [x["tree_correct"] for x in inputs]
    assert sorted(malformed) == [0, 0, 1, 1]
    assert all(ok == (n == 0) for ok, n in zip(correct, malformed, strict=True))  # the refused root has no answer
    logged = trainer._metrics["train"]
    assert logged["tree/malformed_share"][-1] == pytest.approx(0.5)
    assert logged["rewards/malformed_spawn_reward/mean"][-1] == pytest.approx(-0.5)
    assert logged["reward"][-1] == pytest.approx(0.5 * 1.0 + 0.5 * -0.5)  # weighted sum: correct 1, penalty 0.5


def test_grpo_step_shares_advantage_over_tree(tokenizer, tmp_path, monkeypatch):
    trees = _solved_trees(2)
    prompts = [root_prompt(t.problem) for t in trees]
    cfg = TreeGRPOConfig(
        output_dir=str(tmp_path), num_generations=2, per_device_train_batch_size=4, max_steps=1,
        context_window=1024, max_completion_length=1024, logging_steps=1, seed=0, tree_loss_weighting="tokens",
    )
    from datasets import Dataset

    from training.grpo import make_rollout_func

    trainer = tree_trainer_class()(
        model=_tiny_model(tokenizer), reward_funcs=[tree_correct_reward], args=cfg,
        train_dataset=Dataset.from_dict({"prompt": prompts * 4}), processing_class=tokenizer,
        rollout_func=make_rollout_func(cfg, tokenizer,
                                       backend_factory=lambda _: ScriptedBackend(_script(trees, sabotage=True))),
    )
    trainer.model.train()
    inputs = [{"prompt": p} for p in prompts for _ in range(2)]
    out = trainer._generate_and_score_completions(inputs)

    rows = [x["tree_rows"] for x in inputs]
    rewards = [x["tree_correct"] for x in inputs]
    assert len(set(rewards[:2])) == 2  # sabotage makes the group's rewards differ
    n_roots = len(inputs)
    assert out["completion_ids"].shape[0] == n_roots + sum(len(r) for r in rows)
    start = n_roots
    for i, extra in enumerate(rows):
        tree_adv = out["advantages"][start:start + len(extra)]
        assert torch.all(tree_adv == out["advantages"][i])  # every row of the tree carries its advantage
        start += len(extra)
    assert torch.any(out["advantages"] != 0)
    # the join text inside each root row is excluded from the loss; child rows are fully trained
    loss_mask = out["completion_mask"] * out["tool_mask"]
    for i in range(n_roots):
        kept = out["completion_ids"][i][loss_mask[i].bool()].tolist()
        dropped = out["completion_ids"][i][(out["completion_mask"][i] * (1 - out["tool_mask"][i])).bool()].tolist()
        assert "<Sub Searches>" in tokenizer.decode(dropped)
        assert "<Sub Searches>" not in tokenizer.decode(kept)
    assert int(out["num_items_in_batch"]) == int(loss_mask.sum())

    # Scoring in length-sorted, trimmed chunks gives TRL's log-probabilities and entropies on every scored token.
    from trl import GRPOTrainer

    widths = []
    plain = GRPOTrainer._get_per_token_logps_and_entropies

    def spy(self, model, input_ids, *args, **kwargs):
        widths.append(input_ids.shape[1])
        return plain(self, model, input_ids, *args, **kwargs)

    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    width = out["completion_ids"].shape[1]
    monkeypatch.setattr(GRPOTrainer, "_get_per_token_logps_and_entropies", spy)
    with torch.no_grad():
        ref, ref_entropy, _ = plain(trainer, trainer.model, ids, mask, width, compute_entropy=True)
        ours, entropy, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, mask, width, batch_size=2, compute_entropy=True)
    scored = out["completion_mask"].bool()
    assert ours.shape == ref.shape and torch.allclose(ours[scored], ref[scored], atol=1e-4)
    assert torch.allclose(entropy[scored], ref_entropy[scored], atol=1e-4)
    assert len(widths) == -(-ids.shape[0] // 2) and min(widths) < ids.shape[1]  # short rows ran narrower
    widths.clear()
    trainer.args.score_chunk_rows = 3  # caps the batch TRL passes, and sets it when TRL passes none (loss pass)
    with torch.no_grad():
        capped, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, width, batch_size=8)
        trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, width)
    monkeypatch.undo()  # the loss pass below runs on the real scorer
    assert len(widths) == 2 * -(-ids.shape[0] // 3)
    assert torch.allclose(capped[scored], ref[scored], atol=1e-4)

    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which this test skips
    trainer.args.loss_chunk_rows = 0  # TRL's single pass over every row
    loss = trainer.compute_loss(trainer.model, out)
    loss.backward()
    params = [p for p in trainer.model.parameters() if p.grad is not None]
    whole = [p.grad.clone() for p in params]
    assert whole and all(torch.isfinite(g).all() for g in whole) and any(g.abs().sum() > 0 for g in whole)

    # The loss in chunks of 3 rows, each chunk backpropagated before the next: the same loss and gradients.
    passes = []
    single = GRPOTrainer._compute_loss

    def counted(self, model, inputs):
        passes.append(inputs["completion_ids"].shape[0])
        return single(self, model, inputs)

    monkeypatch.setattr(GRPOTrainer, "_compute_loss", counted)
    trainer.model.zero_grad(set_to_none=True)
    trainer.args.loss_chunk_rows = 3
    chunked = trainer.compute_loss(trainer.model, out)
    chunked.backward()
    rows = out["completion_ids"].shape[0]
    assert passes == [3] * (rows // 3) + ([rows % 3] if rows % 3 else [])
    assert torch.allclose(chunked.detach(), loss.detach(), atol=1e-5)
    for p, g in zip(params, whole, strict=True):
        assert torch.allclose(p.grad, g, atol=1e-6, rtol=1e-4)


def _scored_step(tokenizer, tmp_path, trees: list, negative_advantage_scale: float, model=None, **config):
    """A trainer with scripted rollouts (every other root sabotaged), and the scored batch of one step."""
    from datasets import Dataset

    from training.grpo import make_rollout_func

    prompts = [root_prompt(t.problem) for t in trees]
    cfg = TreeGRPOConfig(
        output_dir=str(tmp_path), num_generations=2, per_device_train_batch_size=4, max_steps=1,
        context_window=1024, max_completion_length=1024, seed=0, tree_loss_weighting="tokens",
        negative_advantage_scale=negative_advantage_scale, **config,
    )
    trainer = tree_trainer_class()(
        model=model if model is not None else _tiny_model(tokenizer), reward_funcs=[tree_correct_reward], args=cfg,
        train_dataset=Dataset.from_dict({"prompt": prompts * 4}), processing_class=tokenizer,
        rollout_func=make_rollout_func(cfg, tokenizer,
                                       backend_factory=lambda _: ScriptedBackend(_script(trees, sabotage=True))),
    )
    inputs = [{"prompt": p} for p in prompts for _ in range(2)]
    return trainer, inputs, trainer._generate_and_score_completions(inputs)


@pytest.mark.parametrize("scale", [0.0, 0.25])
def test_negative_advantages_are_scaled_and_positive_ones_kept(tokenizer, tmp_path, scale):
    trees = _solved_trees(2)

    def advantages(negative_advantage_scale: float) -> tuple[list[bool], torch.Tensor]:
        _, inputs, out = _scored_step(tokenizer, tmp_path, trees, negative_advantage_scale)
        owners = [i for i, x in enumerate(inputs) for _ in x["tree_rows"]]
        roots = out["advantages"][: len(inputs)]
        # every extra row still carries its own tree's (scaled) advantage
        assert torch.equal(out["advantages"][len(inputs):], roots[torch.tensor(owners)])
        return [x["tree_correct"] for x in inputs], roots

    verdicts, plain = advantages(1.0)
    scaled_verdicts, scaled = advantages(scale)
    assert verdicts == scaled_verdicts and True in verdicts and False in verdicts
    assert torch.all(plain[torch.tensor(verdicts)] > 0) and torch.all(plain[~torch.tensor(verdicts)] < 0)
    assert torch.allclose(scaled, torch.where(plain < 0, plain * scale, plain))
    with pytest.raises(ValueError, match="negative_advantage_scale"):
        TreeGRPOConfig(output_dir=str(tmp_path), negative_advantage_scale=-0.5)


def test_a_positive_only_step_raises_the_winning_trees_and_leaves_the_rest_untrained(tokenizer, tmp_path):
    trainer, _, out = _scored_step(tokenizer, tmp_path, _solved_trees(2), 0.0)
    model = trainer.model
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    attention = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    width = out["completion_ids"].shape[1]
    loss_mask = out["completion_mask"] * out["tool_mask"]
    winners = out["advantages"] > 0
    assert winners.any() and (~winners).any() and torch.all(out["advantages"][~winners] == 0)

    def row_logps() -> torch.Tensor:
        with torch.no_grad():
            logps, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, attention, width)
        return (logps * loss_mask).sum(dim=1)

    before = row_logps()
    model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which this test skips
    trainer.args.loss_chunk_rows = 0
    trainer.compute_loss(model, out).backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 1e-3 * p.grad
    after = row_logps()
    assert after[winners].sum() > before[winners].sum()  # gradient ascent on the winning trees' log-likelihood
    # the failing trees' rows alone give no gradient: their advantage is 0
    from training.grpo import _take_rows

    model.zero_grad(set_to_none=True)
    trainer.compute_loss(model, _take_rows(out, torch.nonzero(~winners).flatten(), ids.shape[0])).backward()
    assert all(p.grad is None or torch.all(p.grad == 0) for p in model.parameters())


def test_the_kl_term_scores_every_row_of_the_tree_on_the_reference_model(tokenizer, tmp_path):
    """With `beta` > 0 the reference model's log-probabilities cover the appended child rows too, so the KL term
    holds every thread of the tree near the SFT model, not only the roots."""
    from transformers import LlamaForCausalLM

    _tiny_model(tokenizer).save_pretrained(tmp_path / "sft")  # TRL loads the reference model from the policy's path
    policy = LlamaForCausalLM.from_pretrained(tmp_path / "sft")
    with torch.no_grad():  # a policy that has already moved away from the reference
        for p in policy.parameters():
            p += 0.05 * torch.randn_like(p)
    trainer, inputs, out = _scored_step(tokenizer, tmp_path, _solved_trees(2), 1.0, model=policy, beta=0.1)
    assert out["completion_ids"].shape[0] > len(inputs)  # child rows were appended
    assert out["ref_per_token_logps"].shape == out["completion_ids"].shape
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    attention = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    width = out["completion_ids"].shape[1]
    scored = out["completion_mask"].bool()
    with torch.no_grad():
        ref, _, _ = trainer._get_per_token_logps_and_entropies(trainer.ref_model, ids, attention, width)
        own, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attention, width)
    assert torch.allclose(out["ref_per_token_logps"][scored], ref[scored], atol=1e-5)
    assert not torch.allclose(own[scored], ref[scored], atol=1e-3)  # so the scores above are the reference's

    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which this test skips
    trainer.args.loss_chunk_rows = 0
    trainer.model.train()

    def kl_of_a_loss_pass() -> float:
        trainer.compute_loss(trainer.model, out)
        return trainer._metrics["train"]["kl"][-1]

    assert kl_of_a_loss_pass() > 1e-3  # the moved policy pays for its distance, on every row
    trainer.model.load_state_dict(trainer.ref_model.state_dict())
    assert kl_of_a_loss_pass() == pytest.approx(0.0, abs=1e-6)  # back at the reference, the term vanishes


def test_train_stops_at_its_deadline_and_exports(tokenizer, tmp_path):
    """`train` end to end on scripted rollouts: a past `stop_at` ends the run after its first step (of 3) with a
    checkpoint, `final` is exported and loads, and the weights moved exactly when the group rewards differed."""
    import time

    from transformers import AutoModelForCausalLM

    from training.grpo import train

    problems = make_split("train", 6, numbers=3, seed=5)
    trees = [apr(p, beam_size=3, sub_call_beam_size=3, spawn_prob=1.0, seed=i) for i, p in enumerate(problems)]
    assert any(t.solved for t in trees)
    cfg = TreeGRPOConfig(
        output_dir=str(tmp_path), numbers=3, train_problems=6, problem_seed=5, num_generations=2,
        per_device_train_batch_size=4, max_steps=3, context_window=1024, max_completion_length=1024,
        logging_steps=1, seed=0, save_strategy="no", stop_at=str(time.time() - 1),
    )
    model = _tiny_model(tokenizer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = train(cfg, backend_factory=lambda _: ScriptedBackend(_script(trees, sabotage=True)),
                    model=model, tokenizer=tokenizer)

    assert trainer.state.global_step == 1
    assert (tmp_path / "checkpoint-1").is_dir()
    logged = [h for h in trainer.state.log_history if "reward_std" in h]
    assert logged and "rewards/tree_correct_reward/mean" in logged[0]
    assert 0 < float(logged[0]["tree/rollout_seconds"]) < float(logged[0]["step_time"])
    assert float(logged[0]["tree/malformed_share"]) == 0.0  # the replayed demonstration trees are well formed
    # one size drawn, so its correctness is the correctness reward's mean
    assert float(logged[0]["tree/correct_3n"]) == pytest.approx(float(logged[0]["rewards/tree_correct_reward/mean"]))
    assert "tree/correct_4n" not in logged[0]
    # with the correctness reward alone, a group without spread of verdicts is one without spread of reward
    assert float(logged[0]["tree/no_spread_3n"]) == pytest.approx(float(logged[0]["frac_reward_zero_std"]))
    assert 0 < float(logged[0]["memory/rss_gb"]) <= float(logged[0]["memory/peak_rss_gb"]) + 0.01
    moved = any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert moved == (float(logged[0]["reward_std"]) > 0)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in reloaded.state_dict().items())

    # `resume` continues from checkpoint-1: the weights it saved, then the remaining steps up to max_steps.
    cfg.stop_at, cfg.resume, cfg.max_steps = None, True, 2
    resumed = train(cfg, backend_factory=lambda _: ScriptedBackend(_script(trees, sabotage=True)),
                    model=_tiny_model(tokenizer), tokenizer=tokenizer)
    assert resumed.state.global_step == 2
    steps = [h for h in resumed.state.log_history if "reward_std" in h]
    assert [h["step"] for h in steps] == [1, 2]
    assert steps[0] == logged[0]  # step 1 was restored from the checkpoint, not run again (its timings match)


def test_no_spread_share_counts_groups_whose_trees_agree():
    """A group is the trees of one prompt, wherever they sit in the batch; it has no spread when every verdict is
    the same, right or wrong."""
    from training.grpo import no_spread_share

    assert no_spread_share(["a", "b", "a", "b"], [True, False, True, True]) == 0.5
    assert no_spread_share(["a", "a", "b", "b"], [False, False, True, True]) == 1.0
    assert no_spread_share(["a", "a"], [True, False]) == 0.0
    assert no_spread_share([], []) == 0.0
    with pytest.raises(ValueError):
        no_spread_share(["a", "a"], [True])


def test_solver_beam_keeps_the_problems_the_demonstration_search_solves():
    """`solver_beam` keeps, in stream order, exactly the problems the APR solver solves with the demonstrations'
    search; 0 gives the plain `make_split` prefix; a negative beam is refused."""
    from training.grpo import training_problems

    def cfg(beam: int) -> TreeGRPOConfig:
        return TreeGRPOConfig(output_dir="unused", numbers=4, train_problems=30, problem_seed=8, solver_beam=beam)

    plain = training_problems(cfg(0))
    assert plain == make_split("train", 30, numbers=4, seed=8)
    kept = training_problems(cfg(1))
    assert len(kept) == 30
    stream = make_split("train", 300, numbers=4, seed=8)
    verdicts = [apr(p, beam_size=1, sub_call_beam_size=2, spawn_prob=1.0, spawn_levels=2, seed=0).solved
                for p in stream]
    assert kept == [p for p, ok in zip(stream, verdicts, strict=True) if ok][:30]
    assert not all(verdicts[: stream.index(kept[-1]) + 1])  # some problems were dropped
    with pytest.raises(ValueError, match="solver_beam"):
        cfg(-1)


def test_several_sizes_alternate_each_from_its_own_stream(tmp_path):
    """`numbers: [3, 4]` alternates 3- and 4-number problems, each the prefix of its own size's stream (filtered by
    `solver_beam` like a single size); a recipe's single integer and the `--numbers 3 4` flag both read as lists;
    sizes below 2 and an empty list are refused."""
    from training.grpo import training_problems
    from training.recipe import load_config

    mixed = training_problems(TreeGRPOConfig(output_dir="unused", numbers=[3, 4], train_problems=7, problem_seed=8))
    assert [len(p.numbers) for p in mixed] == [3, 4, 3, 4, 3, 4, 3]
    assert mixed[0::2] == make_split("train", 4, numbers=3, seed=8)
    assert mixed[1::2] == make_split("train", 3, numbers=4, seed=8)
    one = TreeGRPOConfig(output_dir="unused", numbers=[4], train_problems=5, problem_seed=8, solver_beam=1)
    filtered = training_problems(
        TreeGRPOConfig(output_dir="unused", numbers=[3, 4], train_problems=10, problem_seed=8, solver_beam=1))
    assert filtered[1::2] == training_problems(one)

    recipe = tmp_path / "r.yaml"
    recipe.write_text("output_dir: unused\nnumbers: 4\n")
    assert load_config(["--recipe", str(recipe)], cls=TreeGRPOConfig).numbers == [4]
    assert load_config(["--recipe", str(recipe), "--numbers", "3", "4"], cls=TreeGRPOConfig).numbers == [3, 4]
    for bad in ([], [1], [3, 0]):
        with pytest.raises(ValueError, match="numbers must be"):
            TreeGRPOConfig(output_dir="unused", numbers=bad)
