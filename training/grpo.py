"""`spawnjoin-train grpo`: GRPO where one rollout is a whole thread tree produced by the spawnjoin runtime.

TRL's `GRPOTrainer` samples `num_generations` rollouts per prompt through `rollout_func`. Ours solves each prompt
with `spawnjoin.solve` (APR dialect, embedded engine loaded with the current policy weights) and turns the tree into
training rows:

* the **root row**, returned to TRL as the completion: the root's final transcript after its prompt. The text the
  runtime injected (each join block with the children's results) stays in the sequence, since the model conditioned
  on it, but `env_mask` marks it 0 so it carries no loss (TRL's `tool_mask`);
* **extra rows**, returned under the key `tree_rows` and appended by `TreeGRPOTrainer` after scoring: each spawn
  block a parent wrote (the join replaces it in the transcript, so it gets its own row: the context it was written
  in, then the block) and every child thread's transcript (with its own spawn rows, for deeper trees).

The reward (`tree_correct_reward`, optionally plus `parallelism_bonus_reward` and minus `malformed_spawn_reward`'s
penalty) is computed once per tree, TRL
normalises it within the group, and `TreeGRPOTrainer` puts the tree's advantage on every one of its rows (divided by
the tree's row count with `tree_loss_weighting="per_tree"`, as APR divides each sequence's loss).

A call's own tokens in these rows are the ids the engine sampled (the embedded engine reports them in the trace,
`CallTrace.token_ids`); the runtime-injected text, and every call of a backend that reports no ids, is tokenized
from the trace's text segment by segment, so masks line up with tokens exactly. Re-tokenizing sampled text is not
safe: a stop string can end inside a sampled token (see `_thread_rows`).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

    from transformers import PreTrainedTokenizerBase

    from spawnjoin.tasks.countdown import Problem
    from spawnjoin.trace import Trace

    from .grpo_config import TreeGRPOConfig

__all__ = [
    "Row",
    "add_parser",
    "make_rollout_func",
    "malformed_spawn_reward",
    "parallelism_bonus_reward",
    "run",
    "train",
    "tree_correct_reward",
    "tree_rows",
    "tree_trainer_class",
]


# --------------------------------------------------------------------------------------------------- rewards


def tree_correct_reward(prompts: list, completions: list, tree_correct: list[bool], **kwargs: Any) -> list[float]:
    """1.0 when the verifier accepts the root's final path, else 0.0 (computed in the rollout, passed as a column).

    >>> tree_correct_reward(["p", "q"], ["a", "b"], tree_correct=[True, False])
    [1.0, 0.0]
    """
    return [1.0 if ok else 0.0 for ok in tree_correct]


def parallelism_bonus_reward(prompts: list, completions: list, tree_correct: list[bool],
                             tree_total_tokens: list[int], tree_sequential_tokens: list[int],
                             **kwargs: Any) -> list[float]:
    """ThreadWeaver-style bonus for correct trees: the share of tokens off the critical path.

    `1 - sequential / total`: 0 for one serial thread, near 1 for wide trees. Wrong trees get 0, so the bonus never
    pays for parallelism that did not lead to an answer.

    >>> parallelism_bonus_reward(["p"] * 2, ["a"] * 2, [True, False], [400, 400], [100, 100])
    [0.75, 0.0]
    """
    return [
        (1.0 - seq / total) if ok and total > 0 else 0.0
        for ok, total, seq in zip(tree_correct, tree_total_tokens, tree_sequential_tokens, strict=True)
    ]


def malformed_spawn_reward(prompts: list, completions: list, tree_malformed_spawns: list[int],
                           **kwargs: Any) -> list[float]:
    """-1.0 for a tree in which a dialect refused a spawn block (that thread ended with no children), else 0.0.

    Weighted by `malformed_penalty`. The correctness reward alone cannot hold the spawn format in place: most trees
    earn 0 whatever their format, so a format that drifts costs nothing until accuracy falls.

    >>> malformed_spawn_reward(["p"] * 2, ["a"] * 2, tree_malformed_spawns=[0, 2])
    [0.0, -1.0]
    """
    return [-1.0 if n > 0 else 0.0 for n in tree_malformed_spawns]


def reward_functions(cfg: TreeGRPOConfig) -> tuple[list[Any], list[float]]:
    """The reward functions `cfg` asks for, and their weights (correctness always, with weight 1).

    >>> from training.grpo_config import TreeGRPOConfig
    >>> funcs, weights = reward_functions(TreeGRPOConfig(output_dir="/tmp/x", malformed_penalty=0.5))
    >>> [f.__name__ for f in funcs], weights
    (['tree_correct_reward', 'malformed_spawn_reward'], [1.0, 0.5])
    """
    funcs: list[Any] = [tree_correct_reward]
    weights = [1.0]
    if cfg.parallel_bonus > 0:
        funcs.append(parallelism_bonus_reward)
        weights.append(cfg.parallel_bonus)
    if cfg.malformed_penalty > 0:
        funcs.append(malformed_spawn_reward)
        weights.append(cfg.malformed_penalty)
    return funcs, weights


# --------------------------------------------------------------------------------------------------- rows


@dataclass
class Row:
    """One training sequence: prompt token ids, completion token ids, and a 0/1 loss mask over the completion."""

    prompt_ids: list[int]
    completion_ids: list[int]
    env_mask: list[int]


def _kept_prefix(text: str, continuation: str) -> int:
    """Length of the part of a call's `text` that the next call's context keeps (it ends at a line boundary).

    The runtime continues a parent from its text before the spawn block, then the join text; spawn blocks start on
    a new line, so the kept part is the common prefix cut back to its last line end.
    """
    n = 0
    limit = min(len(text), len(continuation))
    while n < limit and text[n] == continuation[n]:
        n += 1
    if n == len(text):
        return n
    cut = text.rfind("\n", 0, n)
    return cut + 1 if cut >= 0 else 0


def _decode(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> str:
    text = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    assert isinstance(text, str)  # one sequence of ids decodes to one string
    return text


def _sampled_ids(call: Any, tokenizer: PreTrainedTokenizerBase) -> list[int] | None:
    """The call's generated token ids (end-of-sequence token dropped) if the backend reported them and they
    decode to the call's text (past its end only when a stop string ended the call), else None."""
    ids = call.token_ids
    if not ids:
        return None
    if ids[-1] == tokenizer.eos_token_id:
        ids = ids[:-1]
    text = _decode(tokenizer, ids)
    ok = text.startswith(call.text) if call.finish_reason == "stop" else text == call.text
    return list(ids) if ok else None


def _split_ids(ids: list[int], text: str, keep: int, tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The token index at which `ids` decode to exactly `text[:keep]`, or None if no token ends there."""
    lo, hi = 0, len(ids)
    while lo < hi:  # the shortest prefix decoding to at least `keep` characters
        mid = (lo + hi) // 2
        if len(_decode(tokenizer, ids[:mid])) >= keep:
            hi = mid
        else:
            lo = mid + 1
    return lo if _decode(tokenizer, ids[:lo]) == text[:keep] else None


def _thread_rows(thread: Any, tokenizer: PreTrainedTokenizerBase) -> list[Row]:
    """The transcript row of one thread (first) and one row per spawn block it wrote.

    A call's own tokens are the ids the engine sampled when the trace has them (`CallTrace.token_ids`): the text
    cannot always give them back, e.g. the APR spawn block ends in the stop string `<End Calling Sub Searches>`,
    which a trained tokenizer emits as one token with the newline after it, while re-tokenizing the stop string
    alone spells it out in characters the model never samples. Without ids (another backend, a resumed stream)
    the text is tokenized segment by segment.
    """

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    calls = thread.calls
    prompt_ids = tokenizer(calls[0].context)["input_ids"]
    completion: list[int] = []
    mask: list[int] = []
    spawn_rows: list[Row] = []
    for k, call in enumerate(calls):
        sampled = _sampled_ids(call, tokenizer)
        if k + 1 < len(calls):
            nxt = calls[k + 1].context
            rest = nxt[len(call.context):] if nxt.startswith(call.context) else nxt
            keep = _kept_prefix(call.text, rest)
            cut = None if sampled is None else _split_ids(sampled, call.text, keep, tokenizer)
            if sampled is not None and cut is not None:
                kept_ids, block_ids = sampled[:cut], sampled[cut:]
                spawn_prompt = tokenizer(call.context)["input_ids"] + kept_ids
            else:
                kept_ids, block_ids = ids(call.text[:keep]), ids(call.text[keep:])
                spawn_prompt = tokenizer(call.context + call.text[:keep])["input_ids"]
            if block_ids:
                spawn_rows.append(Row(spawn_prompt, block_ids, [1] * len(block_ids)))
            injected = ids(rest[keep:])
            completion += kept_ids + injected
            mask += [1] * len(kept_ids) + [0] * len(injected)
        else:
            final = ids(call.text) if sampled is None else sampled
            if call.finish_reason == "eos" and tokenizer.eos_token_id is not None:
                final = final + [tokenizer.eos_token_id]
            completion += final
            mask += [1] * len(final)
    return [Row(prompt_ids, completion, mask), *spawn_rows]


def tree_rows(trace: Trace, tokenizer: PreTrainedTokenizerBase) -> tuple[Row, list[Row]]:
    """Split a solve's thread tree into the root row and the extra rows (spawn blocks, child transcripts).

    Args:
        trace (`Trace`): The solve's trace.
        tokenizer (`PreTrainedTokenizerBase`): The policy's tokenizer.

    Returns:
        `tuple[Row, list[Row]]`: The root's transcript row, and every other row of the tree.
    """
    rows: list[Row] = []
    for thread in trace.walk():
        if thread.calls:
            rows.extend(_thread_rows(thread, tokenizer))
    if not rows:
        empty = tokenizer(trace.root.prompt)["input_ids"]
        return Row(empty, [tokenizer.eos_token_id], [0]), []
    return rows[0], [r for r in rows[1:] if r.completion_ids]


# --------------------------------------------------------------------------------------------------- rollouts


def no_spread_share(prompts: list[str], verdicts: list[bool]) -> float:
    """The share of groups (trees of the same prompt) whose verdicts all agree: no advantage from correctness.

    >>> no_spread_share(["a", "a", "b", "b", "c", "c"], [True, True, True, False, False, False])
    0.6666666666666666
    """
    groups: dict[str, set[bool]] = {}
    for prompt, verdict in zip(prompts, verdicts, strict=True):
        groups.setdefault(prompt, set()).add(verdict)
    return sum(len(v) == 1 for v in groups.values()) / max(len(groups), 1)


def make_rollout_func(cfg: TreeGRPOConfig, tokenizer: PreTrainedTokenizerBase, *, backend_factory: Any = None):
    """Build the `rollout_func(prompts, trainer)` TRL calls once per generation step.

    Each call saves the current policy to a temporary directory, solves every prompt entry (TRL has already
    repeated each prompt `num_generations` times) through the spawnjoin runtime, verifies each root's final path,
    and returns one root row per entry plus the extra keys `env_mask`, `tree_rows`, `tree_correct`,
    `tree_total_tokens`, `tree_sequential_tokens`, `tree_threads` and `tree_malformed_spawns`.

    Args:
        cfg (`TreeGRPOConfig`): Budget and rollout settings.
        tokenizer (`PreTrainedTokenizerBase`): The policy's tokenizer.
        backend_factory (`Callable[[str], Backend]`, *optional*): Builds the backend from a model directory;
            defaults to `EmbeddedBackend(dir, torch_threads=cfg.rollout_torch_threads)`.

    Returns:
        The rollout function.
    """

    def default_factory(model_dir: str) -> Any:
        from spawnjoin.backends.embedded import EmbeddedBackend

        return EmbeddedBackend(model_dir, torch_threads=cfg.rollout_torch_threads)

    factory = backend_factory or default_factory

    async def solve_all(prompts: list[str], backend: Any) -> list[Any]:
        import spawnjoin
        from spawnjoin.backends.base import SamplingParams

        budget = spawnjoin.Budget(context_window=cfg.context_window, max_threads=cfg.max_threads)
        sampling = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p)
        sem = asyncio.Semaphore(cfg.rollout_concurrency)

        async def one(prompt: str) -> Any:
            async with sem:
                return await spawnjoin.solve(prompt, backend=backend, dialect="apr", budget=budget, sampling=sampling)

        try:
            return await asyncio.gather(*(one(p) for p in prompts))
        finally:
            await backend.aclose()

    def rollout_func(prompts: list[str], trainer: Any) -> dict[str, Any]:
        from spawnjoin.tasks.countdown import parse_problem, verify_path

        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="spawnjoin-grpo-") as tmp:
            policy = trainer.accelerator.unwrap_model(trainer.model)
            policy.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            results = asyncio.run(solve_all(list(prompts), factory(tmp)))
        # how much of a step the rollouts take (the rest is scoring and the update)
        trainer._metrics["train"]["tree/rollout_seconds"].append(time.perf_counter() - started)
        out: dict[str, list[Any]] = {k: [] for k in (
            "prompt_ids", "completion_ids", "env_mask", "tree_rows", "tree_correct", "tree_total_tokens",
            "tree_sequential_tokens", "tree_threads", "tree_malformed_spawns")}
        by_size: dict[int, tuple[list[str], list[bool]]] = {}
        for prompt, result in zip(prompts, results, strict=True):
            problem = parse_problem(prompt)
            correct = verify_path(problem, result.text).ok
            size_prompts, size_verdicts = by_size.setdefault(len(problem.numbers), ([], []))
            size_prompts.append(prompt)
            size_verdicts.append(correct)
            root, extra = tree_rows(result.trace, tokenizer)
            out["prompt_ids"].append(root.prompt_ids)
            out["completion_ids"].append(root.completion_ids)
            out["env_mask"].append(root.env_mask)
            out["tree_rows"].append(extra)
            out["tree_correct"].append(correct)
            out["tree_total_tokens"].append(result.metrics.total_tokens)
            out["tree_sequential_tokens"].append(result.metrics.sequential_tokens)
            out["tree_threads"].append(result.metrics.threads)
            out["tree_malformed_spawns"].append(result.trace.malformed_spawns)
        # the share of trees with a refused spawn block: the format drift the correctness reward cannot see
        share = sum(n > 0 for n in out["tree_malformed_spawns"]) / max(len(results), 1)
        trainer._metrics["train"]["tree/malformed_share"].append(share)
        # per size: correctness, and the share of groups whose trees all got the same verdict (no advantage)
        for size, (size_prompts, verdicts) in sorted(by_size.items()):
            trainer._metrics["train"][f"tree/correct_{size}n"].append(sum(verdicts) / len(verdicts))
            trainer._metrics["train"][f"tree/no_spread_{size}n"].append(no_spread_share(size_prompts, verdicts))
        return {**out, "logprobs": None}

    return rollout_func


# --------------------------------------------------------------------------------------------------- trainer


def _pad_left(rows: list[list[int]], width: int, value: int) -> list[list[int]]:
    return [[value] * (width - len(r)) + r for r in rows]


def _pad_right(rows: list[list[int]], width: int, value: int) -> list[list[int]]:
    return [r + [value] * (width - len(r)) for r in rows]


_SUMMED_LOSSES = ("dapo", "cispo")
"""TRL loss types that sum per-token losses over a step and divide by its token count: chunking them is exact."""


def _take_rows(inputs: dict[str, Any], index: Any, rows: int) -> dict[str, Any]:
    """The entries of a batch dict for the rows in `index`: per-row tensors and lists are indexed, the rest
    (scalars such as `num_items_in_batch`, `None`) pass through."""
    out: dict[str, Any] = {}
    for key, value in inputs.items():
        if hasattr(value, "ndim") and value.ndim > 0 and value.shape[0] == rows:
            out[key] = value[index]
        elif isinstance(value, list) and len(value) == rows:
            out[key] = [value[i] for i in index.tolist()]
        else:
            out[key] = value
    return out


def tree_trainer_class() -> type:
    """`TreeGRPOTrainer`: `GRPOTrainer` that appends each tree's extra rows, carrying the tree's advantage."""
    import torch
    from trl import GRPOTrainer

    from .memory import peak_resident_gb, resident_gb

    class TreeGRPOTrainer(GRPOTrainer):
        """GRPO over thread trees: after TRL scores the root rows, scale negative advantages by
        `negative_advantage_scale`, then append every tree's other rows with the same advantage, re-padding
        prompts on the left and completions on the right."""

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            pad = self._tokenizer.pad_token_id
            device = out["prompt_ids"].device
            # TRL copied each rollout's extra keys into its input row; rows come back in input order.
            extra: list[list[Row]] = [x.get("tree_rows") or [] for x in inputs]
            advantages = out["advantages"]
            if self.args.negative_advantage_scale != 1.0:
                advantages = torch.where(advantages < 0, advantages * self.args.negative_advantage_scale, advantages)
            owners = list(range(len(inputs))) + [i for i, rows in enumerate(extra) for _ in rows]
            if self.args.tree_loss_weighting == "per_tree":
                sizes = torch.tensor([1 + len(rows) for rows in extra], dtype=advantages.dtype, device=device)
                advantages = advantages / sizes
            new = [r for rows in extra for r in rows]
            self._metrics["train"]["tree/rows_per_tree"].append(len(owners) / max(len(inputs), 1))
            self._metrics["train"]["memory/rss_gb"].append(resident_gb())
            self._metrics["train"]["memory/peak_rss_gb"].append(peak_resident_gb())

            prompt_rows = [p[m.bool()].tolist() for p, m in zip(out["prompt_ids"], out["prompt_mask"], strict=True)]
            comp_rows = [c[m.bool()].tolist() for c, m in
                         zip(out["completion_ids"], out["completion_mask"], strict=True)]
            tool = out.get("tool_mask")
            mask_rows = [t[m.bool()].tolist() for t, m in zip(tool, out["completion_mask"], strict=True)] if (
                tool is not None) else [[1] * len(c) for c in comp_rows]
            prompt_rows += [r.prompt_ids for r in new]
            comp_rows += [r.completion_ids for r in new]
            mask_rows += [r.env_mask for r in new]

            pw = max(len(r) for r in prompt_rows)
            cw = max(len(r) for r in comp_rows)

            def tensor(rows: list[list[int]]) -> torch.Tensor:
                return torch.tensor(rows, dtype=torch.long, device=device)

            out["prompt_ids"] = tensor(_pad_left(prompt_rows, pw, pad))
            out["prompt_mask"] = tensor(_pad_left([[1] * len(r) for r in prompt_rows], pw, 0))
            out["completion_ids"] = tensor(_pad_right(comp_rows, cw, pad))
            out["completion_mask"] = tensor(_pad_right([[1] * len(r) for r in comp_rows], cw, 0))
            out["tool_mask"] = tensor(_pad_right(mask_rows, cw, 1))
            out["advantages"] = advantages[torch.tensor(owners, device=device)]
            loss_mask = out["completion_mask"] * out["tool_mask"]
            out["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
            for key in ("sampling_per_token_logps", "importance_sampling_ratio"):
                if key in out:
                    raise ValueError(f"{key} is not supported with tree rollouts (no vLLM importance sampling)")
            recompute = [k for k in ("old_per_token_logps", "ref_per_token_logps") if k in out]
            if recompute:
                ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
                attention = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
                with torch.no_grad():
                    for key in recompute:
                        model = self.model if key == "old_per_token_logps" else self.ref_model
                        logps, _, _ = self._get_per_token_logps_and_entropies(
                            model, ids, attention, cw, batch_size=self.args.per_device_train_batch_size)
                        out[key] = logps
            return out

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            """The loss of a step's rows in length-sorted chunks of `loss_chunk_rows`, each chunk's backward run
            before the next chunk's forward, so the step holds one chunk's activations instead of every row's.

            TRL's `dapo`/`cispo` losses are a sum over tokens divided by the step's token count
            (`num_items_in_batch`), so the chunks' gradients add up to the whole batch's. The last chunk's loss
            is returned (plus the earlier chunks' values, detached) for the training loop's own backward. Other
            loss types, entropy masking, gradient accumulation and evaluation take TRL's single pass."""
            rows = inputs["completion_ids"].size(0)
            size = self.args.loss_chunk_rows
            if (return_outputs or not size or rows <= size or not model.training
                    or self.loss_type not in _SUMMED_LOSSES or self.top_entropy_quantile < 1.0
                    or self.current_gradient_accumulation_steps != 1):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            lengths = inputs["prompt_mask"].sum(dim=1) + inputs["completion_mask"].sum(dim=1)
            order = torch.argsort(lengths, stable=True)
            chunks = [order[start:start + size] for start in range(0, rows, size)]
            earlier = torch.zeros((), device=lengths.device)
            for chunk in chunks[:-1]:
                loss = super().compute_loss(model, _take_rows(inputs, chunk, rows))
                self.accelerator.backward(loss)
                earlier = earlier + loss.detach()
            return super().compute_loss(model, _take_rows(inputs, chunks[-1], rows)) + earlier

        def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                               batch_size=None, compute_entropy=False, **kwargs):
            """Score rows in chunks of similar length, each chunk on its own columns.

            Rows are ordered by length (prompt plus completion); each chunk drops the left prompt padding all its
            rows share and the right completion padding, and its results are padded back (zeros, where
            `completion_mask` is 0) and returned in the original row order. Llama's rotary positions are
            relative, so dropping shared left padding leaves the log-probabilities unchanged. Tree rows differ a
            lot in length (a child's transcript, a root's, a spawn block), so this avoids most of the padding."""
            if any(v is not None and v is not False for v in kwargs.values()):  # images, MoE aux loss
                return super()._get_per_token_logps_and_entropies(
                    model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, **kwargs)
            # The loss pass sends every row at once (batch_size None); the old-policy pass sends the batch size.
            batch_size = min(batch_size or self.args.score_chunk_rows, self.args.score_chunk_rows)
            prompt_width = input_ids.size(1) - logits_to_keep
            order = torch.argsort(attention_mask.sum(dim=1), stable=True)
            logps, entropies = [], []
            for start in range(0, input_ids.size(0), batch_size):
                rows = order[start:start + batch_size]
                ids, mask = input_ids[rows], attention_mask[rows]
                used = mask.any(dim=0).nonzero().flatten()
                left = min(int(used[0]), prompt_width - 1)
                right = max(int(used[-1]) + 1, prompt_width + 1)
                chunk_logps, chunk_entropies, _ = super()._get_per_token_logps_and_entropies(
                    model, ids[:, left:right], mask[:, left:right], right - prompt_width, None, compute_entropy)
                pad = (0, logits_to_keep - (right - prompt_width))
                logps.append(torch.nn.functional.pad(chunk_logps, pad))
                if chunk_entropies is not None:
                    entropies.append(torch.nn.functional.pad(chunk_entropies, pad))
            restore = torch.argsort(order)
            return (torch.cat(logps)[restore], torch.cat(entropies)[restore] if entropies else None, None)

    return TreeGRPOTrainer


# --------------------------------------------------------------------------------------------------- train


def training_problems(cfg: TreeGRPOConfig) -> list[Problem]:
    """The first `cfg.train_problems` training-split problems, only those the solver solves if `solver_beam` is set.

    The filter is `training.data.demonstration_search_solves` with root beam `solver_beam`. With several sizes in
    `cfg.numbers` the list alternates between them (3, 4, 3, 4, ...), each size drawn from its own stream.
    """
    from spawnjoin.tasks.countdown import iter_split

    from .data import demonstration_search_solves

    def stream(numbers: int) -> Iterator[Problem]:
        problems = iter_split("train", numbers=numbers, seed=cfg.problem_seed)
        if not cfg.solver_beam:
            return problems
        return (p for p in problems if demonstration_search_solves(p, cfg.solver_beam))

    streams = [stream(n) for n in cfg.numbers]
    alternating = itertools.chain.from_iterable(zip(*streams, strict=False))  # every stream is endless
    return list(itertools.islice(alternating, cfg.train_problems))


def train(cfg: TreeGRPOConfig, *, backend_factory: Any = None, model: Any = None, tokenizer: Any = None) -> Any:
    """Run tree GRPO from `cfg.model_name_or_path` and save the final model to `output_dir/final`.

    Args:
        cfg (`TreeGRPOConfig`): The configuration.
        backend_factory (`Callable[[str], Backend]`, *optional*): Backend builder for rollouts (tests).
        model (`PreTrainedModel`, *optional*): A model to use instead of loading `model_name_or_path`.
        tokenizer (`PreTrainedTokenizerBase`, *optional*): Its tokenizer.

    Returns:
        `TreeGRPOTrainer`: The trainer after training.
    """
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spawnjoin.tasks.countdown import root_prompt

    from .callbacks import TimedSave, resume_checkpoint, wall_clock
    from .memory import fix_mmap_threshold
    from .sft import export_model

    fix_mmap_threshold(cfg.malloc_mmap_threshold)
    if model is None:
        assert cfg.model_name_or_path is not None, "set model_name_or_path or pass a model"
        model = AutoModelForCausalLM.from_pretrained(cfg.model_name_or_path, dtype=torch.float32)
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(cfg.model_name_or_path)
    problems = training_problems(cfg)
    dataset = Dataset.from_dict({"prompt": [root_prompt(p) for p in problems]})
    reward_funcs, cfg.reward_weights = reward_functions(cfg)
    trainer = tree_trainer_class()(
        model=model,
        reward_funcs=reward_funcs,
        args=cfg,
        train_dataset=dataset,
        processing_class=tokenizer,
        rollout_func=make_rollout_func(cfg, tokenizer, backend_factory=backend_factory),
        callbacks=[TimedSave(save_every_minutes=cfg.save_every_minutes, deadline=wall_clock(cfg.stop_at, ahead=True))],
    )
    assert cfg.output_dir is not None  # TrainingArguments.__post_init__ defaults it
    trainer.train(resume_from_checkpoint=resume_checkpoint(cfg.output_dir, cfg.resume, "grpo"))
    export_model(trainer.model, tokenizer, Path(cfg.output_dir) / "final")
    trainer.state.save_to_json(str(Path(cfg.output_dir) / "final" / "trainer_state.json"))
    return trainer


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `grpo` subcommand.

    Args:
        subparsers (`argparse._SubParsersAction`): The CLI's subparsers.

    Returns:
        `argparse.ArgumentParser`: The new subparser.
    """
    from .grpo_config import TreeGRPOConfig
    from .recipe import add_config_arguments

    p = subparsers.add_parser("grpo", help="GRPO over thread-tree rollouts solved by the spawnjoin runtime")
    p.add_argument("--recipe", help="recipe file (YAML): config fields; flags given here override it")
    add_config_arguments(p, TreeGRPOConfig)
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run `spawnjoin-train grpo` with parsed arguments.

    Args:
        args (`argparse.Namespace`): Parsed arguments.

    Returns:
        `int`: Exit status.
    """
    from .grpo_config import TreeGRPOConfig
    from .recipe import config_fields, config_from

    known = {f.name for f in config_fields(TreeGRPOConfig)}
    cfg = config_from(args.recipe, {k: v for k, v in vars(args).items() if k in known}, cls=TreeGRPOConfig)
    if not cfg.model_name_or_path:
        raise SystemExit("spawnjoin-train grpo: set --model_name_or_path to an SFT model directory")
    train(cfg)
    return 0
