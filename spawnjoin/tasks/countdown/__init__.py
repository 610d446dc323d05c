"""Countdown: problems, the trace format, symbolic solvers and the verifier (pure Python, no torch).

Layout: ``problems`` (the ``Problem`` type, generator, splits, prompts), ``format`` (line templates of the trace
format), ``trace`` (demonstration trees), ``solvers`` (SoS+ and APR), ``verify`` (path replay, step statistics).
"""

from ._arith import find_solution, solvable
from .format import child_prompt, returned_path
from .problems import (
    Problem,
    Split,
    iter_split,
    make_split,
    make_splits,
    parse_problem,
    root_prompt,
    sample_problem,
    split_of,
)
from .solvers import add_prompt_prefix, apr, sos_plus
from .trace import Call, ThreadDemo, TraceTree
from .verify import (
    OperatorStats,
    StepStats,
    Verdict,
    expression_for,
    state_reachable,
    step_stats,
    verify_path,
)

__all__ = [
    "Call",
    "OperatorStats",
    "Problem",
    "Split",
    "StepStats",
    "ThreadDemo",
    "TraceTree",
    "Verdict",
    "add_prompt_prefix",
    "apr",
    "child_prompt",
    "expression_for",
    "find_solution",
    "iter_split",
    "make_split",
    "make_splits",
    "parse_problem",
    "returned_path",
    "root_prompt",
    "sample_problem",
    "solvable",
    "sos_plus",
    "split_of",
    "state_reachable",
    "step_stats",
    "verify_path",
]
