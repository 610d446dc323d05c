"""The side-by-side helpers of benchmarks/speedup.py: shared problems only, medians."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "speedup", Path(__file__).resolve().parents[1] / "benchmarks" / "speedup.py"
)
speedup = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(speedup)


def _report(name: str, rows: list[tuple[str, bool, float]]) -> dict:
    results = [
        {"problem": p, "correct": c, "latency": lat, "total_tokens": 10, "sequential_tokens": 5, "threads": 2}
        for p, c, lat in rows
    ]
    return {"name": name, "results": results}


def test_common_keeps_only_problems_every_report_finished() -> None:
    apr = _report("apr", [("a", True, 1.0), ("b", False, 3.0), ("c", True, 9.0)])
    sos = _report("sos", [("a", False, 2.0), ("b", True, 4.0)])
    shared = speedup._common(apr, [apr, sos])
    assert shared["problems"] == 2
    assert shared["accuracy"] == pytest.approx(0.5)
    assert shared["mean_latency_s"] == pytest.approx(2.0)
    assert {r["problem"] for r in shared["results"]} == {"a", "b"}


def test_median_latency_is_the_median_not_the_mean() -> None:
    rep = _report("sos", [("a", True, 1.0), ("b", True, 2.0), ("c", True, 30.0)])
    assert speedup._median_latency(rep) == pytest.approx(2.0)
    assert speedup._median_latency({"results": []}) == 0.0
