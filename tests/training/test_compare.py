"""`spawnjoin-train compare`: paired counts, the exact sign test and accuracy at equal latency."""

from __future__ import annotations

import json

import pytest

from training.cli import main
from training.compare import compare, join_reports, sign_test


def _report(name: str, outcomes: dict[str, tuple[bool, float]], **config) -> dict:
    """A minimal eval report: problem -> (correct, latency); tokens scale with latency."""
    results = [{"problem": p, "correct": ok, "latency": lat, "total_tokens": int(100 * lat),
                "sequential_tokens": int(50 * lat)} for p, (ok, lat) in outcomes.items()]
    return {"name": name, "config": {"numbers": 3, "concurrency": 32, **config}, "results": results}


def test_sign_test_matches_the_binomial_tails():
    assert sign_test(6, 0) == pytest.approx(2 / 64)  # all six discordant problems to one side
    assert sign_test(0, 6) == sign_test(6, 0)
    assert sign_test(3, 3) == 1.0
    assert sign_test(0, 0) == 1.0
    assert sign_test(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)


def test_pairs_only_common_problems_and_counts_discordant_ones():
    a = _report("A", {"p1": (True, 1.0), "p2": (True, 2.0), "p3": (False, 1.0), "p4": (True, 1.0), "only-a": (True, 1)})
    b = _report("B", {"p1": (True, 4.0), "p2": (False, 4.0), "p3": (True, 8.0), "p4": (False, 4.0), "only-b": (True, 1)})
    c = compare(a, b, budgets=[1.0, 4.0, 8.0])
    assert c["common"] == 4
    assert c["solved"] == {"both": 1, "a_only": 2, "b_only": 1, "a": 3, "b": 2}
    assert c["difference_points"] == 25.0
    assert c["sign_test_p"] == pytest.approx(1.0)
    assert c["means"]["latency"] == {"a": 1.25, "b": 5.0, "b_over_a": 4.0}
    assert [(w["a"], w["b"]) for w in c["solved_within_latency"]] == [(2, 0), (3, 1), (3, 2)]
    assert c["a_ahead_at_equal_latency"] is True
    assert compare(b, a, budgets=[1.0, 4.0, 8.0])["a_ahead_at_equal_latency"] is False


def test_a_slower_model_is_not_ahead_at_equal_latency_even_when_more_accurate():
    a = _report("A", {f"p{i}": (True, 10.0) for i in range(4)})
    b = _report("B", {f"p{i}": (i < 2, 1.0) for i in range(4)})
    c = compare(a, b)
    assert c["accuracy"] == {"a": 1.0, "b": 0.5}
    assert c["solved_within_latency"][0]["a"] == 0 and c["solved_within_latency"][0]["b"] == 2
    assert c["a_ahead_at_equal_latency"] is False
    assert c["solved_within_latency"][-1] == {"latency_s": 10.0, "a": 4, "b": 2}  # default budgets reach the max


def test_cli_prints_writes_json_and_flags_different_settings(tmp_path, capsys):
    a = _report("APR", {"p1": (True, 1.0), "p2": (False, 1.0)})
    b = _report("SoS+", {"p1": (False, 2.0), "p2": (False, 2.0)}, concurrency=8)
    paths = []
    for name, report in (("a.json", a), ("b.json", b)):
        (tmp_path / name).write_text(json.dumps(report))
        paths.append(str(tmp_path / name))
    assert main(["compare", *paths, "--out", str(tmp_path / "c.json")]) == 0
    printed = capsys.readouterr().out
    assert "A only 1, B only 0" in printed and "differ in concurrency" in printed
    assert json.loads((tmp_path / "c.json").read_text())["settings_differ"] == ["concurrency"]


def test_reports_without_common_problems_exit_2(tmp_path, capsys):
    (tmp_path / "a.json").write_text(json.dumps(_report("A", {"p1": (True, 1.0)})))
    (tmp_path / "b.json").write_text(json.dumps(_report("B", {"p2": (True, 1.0)}, numbers=4)))
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
    assert "share no problem" in capsys.readouterr().out


def test_score_pairs_pass_and_self_consistency_of_sampled_reports(tmp_path, capsys):
    """A sampled report is scored by its first sample, pass@N or sc@N; a greedy report by `correct` in all three."""
    greedy = _report("APR", {"p1": (True, 1.0), "p2": (False, 1.0), "p3": (False, 1.0)})
    sampled = _report("SoS+ x4", {"p1": (False, 2.0), "p2": (False, 2.0), "p3": (False, 2.0)}, samples=4)
    for row, passed, consistent in zip(sampled["results"], (True, True, True), (False, True, True), strict=True):
        row["pass_at_n"], row["sc_at_n"] = passed, consistent
    assert compare(greedy, sampled)["solved"] == {"both": 0, "a_only": 1, "b_only": 0, "a": 1, "b": 0}
    assert compare(greedy, sampled, score="sc")["solved"] == {"both": 0, "a_only": 1, "b_only": 2, "a": 1, "b": 2}
    assert compare(greedy, sampled, score="pass")["solved"]["b"] == 3
    with pytest.raises(ValueError, match="score must be one of"):
        compare(greedy, sampled, score="best")
    del sampled["results"][0]["sc_at_n"]
    with pytest.raises(ValueError, match="4 samples"):
        compare(greedy, sampled, score="sc")
    sampled["results"][0]["sc_at_n"] = False
    paths = []
    for name, report in (("a.json", greedy), ("b.json", sampled)):
        (tmp_path / name).write_text(json.dumps(report))
        paths.append(str(tmp_path / name))
    assert main(["compare", *paths, "--score", "sc"]) == 0
    assert "solved = sc" in capsys.readouterr().out


def test_parts_of_one_evaluation_join_with_plus(tmp_path, capsys):
    """A run cut off by `--time-limit` and its `--start` rest compare as one report; parts that overlap or differ
    in settings are refused."""
    a = _report("SFT", {"p1": (True, 1.0), "p2": (True, 1.0), "p3": (False, 1.0)})
    b1 = _report("GRPO", {"p1": (False, 1.0)})
    b2 = _report("GRPO", {"p2": (False, 1.0), "p3": (True, 1.0)})
    for name, report in (("a.json", a), ("b1.json", b1), ("b2.json", b2)):
        (tmp_path / name).write_text(json.dumps(report))
    assert main(["compare", str(tmp_path / "a.json"), f"{tmp_path / 'b1.json'}+{tmp_path / 'b2.json'}"]) == 0
    assert "3 common problems" in capsys.readouterr().out
    assert [r["problem"] for r in join_reports([b1, b2])["results"]] == ["p1", "p2", "p3"]
    with pytest.raises(ValueError, match="share a problem"):
        join_reports([b1, b1])
    with pytest.raises(ValueError, match="differ in concurrency"):
        join_reports([b1, _report("GRPO", {"p4": (True, 1.0)}, concurrency=8)])
    (tmp_path / "b3.json").write_text(json.dumps(b1))
    assert main(["compare", str(tmp_path / "a.json"), f"{tmp_path / 'b1.json'}+{tmp_path / 'b3.json'}"]) == 2
    assert "share a problem" in capsys.readouterr().out
