"""The symbolic APR solver's trees, replayed through the runtime, come back call for call.

This pins the solver (training data) and the `apr` dialect (inference) to the same format: every context
the runtime builds must be one the solver wrote, and the root's answer must verify.
"""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

import spawnjoin
from spawnjoin import Budget
from spawnjoin.backends.base import GenerationRequest
from spawnjoin.backends.scripted import ScriptedBackend
from spawnjoin.tasks.countdown import apr, sample_problem, verify_path
from spawnjoin.tasks.countdown.problems import Problem


def replay(tree_contexts: dict[str, str]):
    def model(request: GenerationRequest) -> str:
        assert request.prompt in tree_contexts, f"the runtime built a context the solver never wrote:\n{request.prompt}"
        return tree_contexts[request.prompt]

    return model


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    numbers=st.sampled_from([3, 4]),
    levels=st.sampled_from([1, 2]),
    beam=st.integers(1, 4),
)
def test_solver_trees_replay_exactly(seed: int, numbers: int, levels: int, beam: int) -> None:
    import random

    problem: Problem = sample_problem(random.Random(seed), numbers=numbers)
    tree = apr(problem, seed=seed, beam_size=beam, spawn_levels=levels)
    contexts = {call.context: call.target for _, _, call in tree.calls()}
    backend = ScriptedBackend(replay(contexts))
    result = asyncio.run(
        spawnjoin.solve(
            f"{problem.target} {' '.join(map(str, problem.numbers))}",
            backend=backend,
            task="countdown",
            budget=Budget(max_threads=1000, max_children=100, max_depth=5),
        )
    )
    assert result.status == "done", result.error
    assert result.metrics.threads == sum(1 for _ in tree.threads())
    assert len(backend.requests) == sum(len(t.calls) for t in tree.threads())
    assert {r.prompt for r in backend.requests} == set(contexts)
    assert (result.answer is not None) == tree.solved
    if tree.solved:
        assert verify_path(problem, result.text).ok
        expr, value = result.answer.split(" = ")
        assert int(value) == problem.target
