"""Every script in `examples/` runs as a subprocess, at toy size, and prints what its docstring promises.

The assertions read the printed output (and saved traces) the way a user would: answers must verify, trees
must have the threads the output claims, and the numbers must agree with each other.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from spawnjoin.trace import Trace, compute_metrics

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SHIPPED_MODEL = ROOT / "spawnjoin" / "models" / "countdown-apr"


def run_example(name: str, *args: str, timeout: float = 120, env: dict[str, str] | None = None) -> str:
    """Run `examples/<name>` with this interpreter; return its stdout (it must exit 0)."""
    base = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env if env is not None else base,
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def check_expression(answer: str, problem: str) -> None:
    """`answer` ("4*(9-3) = 24") uses exactly the problem's numbers and evaluates to its target."""
    target, *numbers = (int(x) for x in problem.split())
    expression, value = answer.split(" = ")
    assert int(value) == target
    assert Counter(int(n) for n in re.findall(r"\d+", expression)) == Counter(numbers)
    assert eval(expression, {"__builtins__": {}}) == target  # digits, + - * / and brackets only


def check_trace(trace: Trace) -> None:
    """A saved trace is a consistent tree whose stored metrics are recomputable."""
    assert trace.root.parent_id is None
    for thread in trace.threads.values():
        if thread.parent_id is not None:
            parent = trace.threads[thread.parent_id]
            assert thread.id in parent.children and thread.depth == parent.depth + 1
    assert [t.id for t in trace.walk()] and len(trace.walk()) == len(trace.threads)
    again = compute_metrics(trace, wall_time=trace.metrics.wall_time)
    assert again == trace.metrics
    assert trace.metrics.sequential_tokens <= trace.metrics.total_tokens


# -- custom_dialect.py ------------------------------------------------------------------------------


def test_custom_dialect_runs_a_fork_join_tree() -> None:
    out = run_example("custom_dialect.py")
    assert "dialect fork · backend scripted · status done" in out
    for country, capital in [("France", "Paris"), ("Japan", "Tokyo"), ("Peru", "Lima")]:
        assert re.search(rf"^[├└]── {country}\s+done\s+2 tok .*{capital}$", out, re.MULTILINE), out
        assert f"- {country}: {capital}\n" in out  # the join block in the root's transcript
    assert "answer: Paris, Tokyo, Lima" in out
    assert "threads 4 · spawns 1 · status done" in out
    assert "backend requests: 5" in out


# -- live_view_app.py -------------------------------------------------------------------------------

LINE = re.compile(r"^(?P<problem>[\d ]+) -> (?P<answer>.+?)( verified)? \(threads (?P<threads>\d+), spawns (?P<spawns>\d+)\)$")


def _solve_lines(out: str) -> list[re.Match[str]]:
    return [m for line in out.splitlines() if (m := LINE.match(line))]


def test_live_view_app_plain_output_counts_spawns_and_verifies() -> None:
    out = run_example("live_view_app.py", "--no-live", "--delay", "0")
    lines = _solve_lines(out)
    assert [m["problem"] for m in lines] == ["24 4 9 3", "10 5 4 44 14", "86 90 2 8", "36 2 5 7 11"]
    answered = [m for m in lines if m["answer"] != "no answer"]
    assert len(answered) == 3
    for m in answered:
        assert m.group(3) == " verified"
        check_expression(m["answer"], m["problem"])
    spawns = sum(int(m["spawns"]) for m in lines)
    children = sum(int(m["threads"]) - 1 for m in lines)
    assert spawns >= 3
    assert f"spawn hook: {spawns} spawns, {children} child threads" in out
    assert "metrics agree: True" in out
    # one tree for all solves: the batch thread, a line per problem, their children
    assert out.startswith("batch of 4")
    assert f"threads {1 + len(lines) + children} ·" in out
    assert "solve done · answer 3/4 solved" in out


def test_live_view_app_live_mode_draws_a_final_frame() -> None:
    out = run_example("live_view_app.py", "--delay", "0", "24 4 9 3")  # stdout is a pipe: the final frame only
    assert "batch of 1" in out and "24 4 9 3 -> 4*(9-3) = 24 verified" in out
    assert "metrics agree: True" in out


# -- endpoint.py ------------------------------------------------------------------------------------


def _check_endpoint_output(out: str) -> None:
    assert "root" in out and re.search(r"^root\s+done\s+\d+ tok", out, re.MULTILINE), out
    m = re.search(r"status done · threads (\d+) · total tokens (\d+) · sequential (\d+)", out)
    assert m, out
    threads, total, sequential = map(int, m.groups())
    assert threads >= 1 and 0 < sequential <= total


def test_endpoint_without_a_server_skips_cleanly() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPAWNJOIN_VLLM")}
    out = run_example("endpoint.py", env=env)
    assert out.startswith("skipped: no endpoint configured")


def test_endpoint_against_the_toy_openai_server(tmp_path: Path) -> None:
    from tests.servers import FaultServer

    with FaultServer(("toy",), max_model_len=512) as server:
        out = run_example("endpoint.py", "--endpoint", server.url + "/v1", "--model", "toy",
                          "--save", str(tmp_path / "t.json"))
        body = server.completions()[0]
    _check_endpoint_output(out)
    assert "threads 1 · total tokens 64 · sequential 64" in out  # the toy model never spawns
    assert "no spawn" in out
    assert body["max_tokens"] == 64 and body["stop"] == ["</Outlines>"]  # the threadweaver root's stop
    check_trace(Trace.load(tmp_path / "t.json"))


def test_endpoint_sglang_native_and_several_servers() -> None:
    from tests.servers import FaultServer, SGLangServer

    with SGLangServer(context_length=512) as sglang:
        out = run_example("endpoint.py", "--sglang", "--endpoint", sglang.url)
        assert len(sglang.requests) == 1
    _check_endpoint_output(out)
    assert "backend: SGLangBackend(" in out and "cached prompt tokens 0" in out

    with FaultServer(("toy",)) as one, FaultServer(("toy",)) as two:
        out = run_example("endpoint.py", "--endpoint", one.url, "--endpoint", two.url, "--model", "toy")
        served = len(one.requests) + len(two.requests)
    _check_endpoint_output(out)
    assert "backend: MultiBackend(" in out and served == 1
    assert len(re.findall(r"^endpoint .*: served \d+, failures 0, down False$", out, re.MULTILINE)) == 2


@pytest.mark.vllm
@pytest.mark.skipif(not os.environ.get("SPAWNJOIN_VLLM_URL"), reason="SPAWNJOIN_VLLM_URL is unset (.ci/vllm.sh)")
def test_endpoint_against_vllm_from_the_environment() -> None:
    out = run_example("endpoint.py", "--max-tokens-per-call", "32", timeout=300)
    _check_endpoint_output(out)
    assert f"model='{os.environ.get('SPAWNJOIN_VLLM_MODEL')}'" in out or "model=None" in out


# -- countdown_embedded.py --------------------------------------------------------------------------

ROW = re.compile(
    r"^(?P<problem>[\d ]+?)\s+answer (?P<answer>.+?)\s+verified (?P<verified>yes|no)\s+status (?P<status>\w+)"
    r"\s+threads (?P<threads>\d+)\s+spawns (?P<spawns>\d+)\s+tokens (?P<total>\d+) / (?P<seq>\d+) sequential"
    r"(  \((?P<reason>.+)\))?$"
)


@pytest.mark.slow
def test_countdown_embedded_with_the_shipped_model(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    pytest.importorskip("torch")
    from spawnjoin.tasks.countdown import parse_problem, root_prompt, verify_path

    args = ["24 4 9 3", "86 90 2 8", "--max-total-tokens", "1500", "--torch-threads", "1",
            "--save-dir", str(tmp_path)]
    if not (SHIPPED_MODEL / "config.json").exists():  # before the model is trained: any local model will do
        args += ["--model", str(request.getfixturevalue("tiny_model_dir"))]
    out = run_example("countdown_embedded.py", *args, timeout=600)
    rows = [m for line in out.splitlines() if (m := ROW.match(line.strip()))]
    assert [r["problem"] for r in rows] == ["24 4 9 3", "86 90 2 8"], out
    total = sequential = 0
    for i, row in enumerate(rows):
        trace = Trace.load(tmp_path / f"problem-{i}.json")
        check_trace(trace)
        m = trace.metrics
        assert (row["status"], int(row["threads"]), int(row["spawns"])) == (trace.status, m.threads, m.spawns)
        assert (int(row["total"]), int(row["seq"])) == (m.total_tokens, m.sequential_tokens)
        assert row["reason"] == trace.root.reason
        problem = parse_problem(row["problem"])
        assert trace.root.prompt == root_prompt(problem)
        for child in trace.walk()[1:]:  # every spawned thread starts at a node its parent generated
            assert child.prompt.startswith("Moving to Node #0,")
        if row["answer"] != "-":  # any answer printed verifies
            assert row["verified"] == "yes"
            assert verify_path(problem, trace.root.transcript).ok
            check_expression(row["answer"], row["problem"])
        else:
            assert row["verified"] == "no" and trace.answer is None
        total += m.total_tokens
        sequential += m.sequential_tokens
    assert f"{total} tokens, {sequential} sequential" in out


# -- train_toy.py -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_toy_trains_and_solves_through_the_runtime(tmp_path: Path) -> None:
    pytest.importorskip("trl")
    out = run_example(
        "train_toy.py", "--out", str(tmp_path), "--trees", "60", "--steps", "40", "--problems", "2",
        "--max-total-tokens", "120", "--threads", "1", timeout=600,
    )
    assert re.search(r"^\[1/3\] data: 60 trees, \d+ calls", out, re.MULTILINE), out
    m = re.search(r"^\[2/3\] sft: 40 steps, loss ([\d.]+) -> ([\d.]+)", out, re.MULTILINE)
    assert m and float(m[2]) < float(m[1]), out
    final = tmp_path / "sft" / "final"
    assert (final / "config.json").exists() and (final / "model.safetensors").exists()
    assert (final / "tokenizer.json").exists()
    solved = re.findall(r"^[\d ]+answer .* status (\w+)\s+threads (\d+)\s+spawns (\d+)\s+tokens (\d+)$", out, re.M)
    assert len(solved) == 2 and all(s[0] == "done" and 0 < int(s[3]) <= 120 for s in solved), out
