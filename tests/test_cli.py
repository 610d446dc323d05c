"""The `spawnjoin` command: `show` (plain, replay, HTML), `solve` (plain, live, JSON, --save), errors, tmux."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from test_view_state import hand_trace

import spawnjoin
from spawnjoin.cli import main
from spawnjoin.trace import Trace

needs_solve = pytest.mark.skipif(not hasattr(spawnjoin, "solve"), reason="spawnjoin.solve is not written yet")

BACKENDS = textwrap.dedent(
    '''
    """Scripted backends for the CLI tests (loaded with --backend MODULE:FACTORY)."""
    from spawnjoin import ServerError
    from spawnjoin.backends.scripted import ScriptedBackend

    def model(request):
        p = request.prompt
        if p.endswith("\\n<Thread>\\n1:"):
            return " 3 + 4 = 7, too small</Thread>"
        if p.endswith("\\n<Thread>\\n2:"):
            return " 6 * 7 = 42, found it</Thread>"
        if "</Parallel>" in p:
            return "<Conclusion>42</Conclusion>"
        return "Two ways. <Parallel>\\n<Outlines>\\n<Outline>1: add</Outline>\\n<Outline>2: multiply</Outline>\\n</Outlines>"

    def slow_model(request):
        if request.prompt.endswith(":"):
            return " ponder" * 200 + "</Thread>"
        return model(request)

    def make():
        return ScriptedBackend(model)

    def make_paced():
        return ScriptedBackend(model, delay=0.05)

    def make_slow():
        return ScriptedBackend(slow_model, delay=0.02)

    def make_failing():
        return ScriptedBackend(lambda request: ServerError("server exploded", status=500))

    def make_nothing():
        return 42
    '''
)

TREE = [
    "root          done  10 tok",
    "├── Thread 1  done   7 tok",
    "└── Thread 2  done   7 tok",
]


@pytest.fixture(autouse=True)
def plain_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 100-column console that is not a terminal, whatever the test runner's environment says."""
    monkeypatch.setenv("COLUMNS", "100")
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def backends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Writes the scripted backends module and returns its (unique) module name."""
    name = f"sj_cli_backends_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(BACKENDS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def strip_rates(lines: list[str]) -> list[str]:
    """Tree lines without the speed and last-words columns (speeds depend on the machine)."""
    return [line.split(" tok ")[0] + " tok" for line in lines]


# -- show ----------------------------------------------------------------------------------------------


def test_show_prints_the_final_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = hand_trace().save(tmp_path / "t.json")
    assert main(["show", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "dialect threadweaver · backend scripted · status done",
        "root   done    16 tok   5.3 tok/s  plan: split in two answer 42",
        "├── a  done    20 tok  10.0 tok/s  a works",
        "└── b  failed   5 tok   1.7 tok/s  ServerError: boom",
        "threads 3 (1 failed) · tokens 41 (36 sequential) · elapsed 6.5s · cache reuse 35% (160 tok)",
        "solve done",
    ]


def test_show_html_and_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = hand_trace().save(tmp_path / "t.json")
    assert main(["show", str(path), "--replay", "--speed", "100", "--html", str(tmp_path / "t.html")]) == 0
    out, err = capsys.readouterr()
    assert "└── b  failed   5 tok" in out and out.rstrip().endswith("solve done")
    assert f"wrote {tmp_path / 't.html'}" in err
    page = (tmp_path / "t.html").read_text()
    assert page.count('class="life"') == 3 and "spawnjoin trace: t.json" in page


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("{not json", "is not a readable spawnjoin trace"),
        ('{"schema_version": 99}', "trace schema version 99"),
        ('{"schema_version": 1}', "is not a readable spawnjoin trace"),
    ],
)
def test_show_rejects_unreadable_traces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    assert main(["show", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spawnjoin: error: ") and message in err and "Traceback" not in err


def test_show_rejects_a_bad_speed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = hand_trace().save(tmp_path / "t.json")
    assert main(["show", str(path), "--replay", "--speed", "0"]) == 2
    assert "--speed must be positive" in capsys.readouterr().err


# -- solve ---------------------------------------------------------------------------------------------


@needs_solve
def test_solve_plain_output_when_stdout_is_not_a_terminal(
    backends: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["solve", "Q", "--dialect", "threadweaver", "--backend", f"{backends}:make"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert strip_rates(lines[:3]) == TREE
    assert re.fullmatch(
        r"threads 3 · tokens 24 \(17 sequential\) · elapsed \d+\.\ds · cache reuse n/a", lines[3]
    )
    assert lines[4].startswith("solve done · answer Two ways.")
    assert lines[5] == "answer:"
    assert out.rstrip().endswith("<Conclusion>42</Conclusion>")
    assert "\x1b[" not in out and err == ""


@needs_solve
def test_solve_json_and_save(backends: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save = tmp_path / "runs" / "trace.json"
    argv = [
        "solve",
        "Q",
        "--dialect",
        "threadweaver",
        "--backend",
        f"{backends}:make",
        "--json",
        "--save",
        str(save),
    ]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert data["status"] == "done" and data["error"] is None
    assert data["answer"].endswith("<Conclusion>42</Conclusion>")
    assert data["metrics"]["threads"] == 3 and data["metrics"]["total_tokens"] == 24
    assert data["trace"] == str(save)
    assert f"trace saved to {save}" in err
    trace = Trace.load(save)
    assert trace.status == "done" and trace.metrics.model_dump() == data["metrics"]
    assert [t.label for t in trace.walk()] == ["root", "Thread 1", "Thread 2"]


@needs_solve
def test_a_failed_solve_exits_1_and_still_saves_its_trace(
    backends: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save = tmp_path / "failed.json"
    assert main(["solve", "Q", "--backend", f"{backends}:make_failing", "--save", str(save)]) == 1
    out, err = capsys.readouterr()
    assert "root  failed  0 tok" in out and "answer: (none)" in out
    assert "spawnjoin: error: the solve ended with status failed: ServerError: server exploded" in err
    trace = Trace.load(save)
    assert trace.status == "failed" and trace.root.error == "ServerError: server exploded"


@needs_solve
def test_a_deadline_saves_the_partial_tree(
    backends: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save = tmp_path / "partial.json"
    argv = [
        "solve",
        "Q",
        "--dialect",
        "threadweaver",
        "--backend",
        f"{backends}:make_slow",
        "--deadline",
        "1.0",
        "--save",
        str(save),
        "--json",
    ]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["status"] == "deadline"
    assert "status deadline" in err
    trace = Trace.load(save)
    assert trace.status == "deadline" and len(trace.threads) == 3
    assert {t.status for t in trace.children_of("0")} == {"cancelled"}
    assert 0 < trace.metrics.total_tokens < 2 * 200 + 20


@needs_solve
def test_solve_with_the_live_view(
    backends: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich treats stdout as a terminal: the live path runs
    assert main(["solve", "Q", "--dialect", "threadweaver", "--backend", f"{backends}:make_paced"]) == 0
    out = capsys.readouterr().out
    assert "\x1b[" in out  # colours and cursor movement: it drew live
    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    for label in ("root", "Thread 1", "Thread 2", "solve done", "answer:"):
        assert label in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-threads", "0"], "--max-threads: Input should be greater than or equal to 1"),
        (["--deadline", "-1"], "--deadline: Input should be greater than 0"),
        (["--temperature", "-1"], "--temperature: Input should be greater than or equal to 0"),
        (
            ["--api-key-env", "SPAWNJOIN_TEST_UNSET_VAR"],
            "SPAWNJOIN_TEST_UNSET_VAR: that environment variable is not set",
        ),
        (["--api-key-env", "HOME"], "--api-key-env needs --endpoint"),
        (["--backend", "x:y", "--model", "m"], "--backend replaces --endpoint and --model"),
        (["--backend", "nocolon"], "write it as MODULE:FACTORY"),
        (["--backend", "no_such_module_xyz:make"], "No module named 'no_such_module_xyz'"),
    ],
)
def test_bad_options_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SPAWNJOIN_TEST_UNSET_VAR", raising=False)
    assert main(["solve", "Q", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spawnjoin: error: ") and message in err


@needs_solve
def test_a_factory_that_returns_no_backend(backends: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["solve", "Q", "--backend", f"{backends}:make_nothing"]) == 2
    assert "returned int, not a spawnjoin Backend" in capsys.readouterr().err


def test_usage_errors_come_from_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["solve", "Q", "--dialect", "klingon"])
    assert exc.value.code == 2 and "invalid choice: 'klingon'" in capsys.readouterr().err


@needs_solve
def test_solve_against_an_openai_compatible_endpoint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    servers = pytest.importorskip("tests.servers", reason="the fake OpenAI server is not available")
    monkeypatch.setenv("SPAWNJOIN_TEST_KEY", "sk-test-123")
    with servers.FaultServer() as server:
        argv = [
            "solve",
            "Once upon",
            "--endpoint",
            server.url + "/v1",
            "--api-key-env",
            "SPAWNJOIN_TEST_KEY",
            "--max-total-tokens",
            "12",
            "--json",
        ]
        assert main(argv) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["status"] == "done" and data["metrics"]["total_tokens"] == 12
        assert server.requests[0]["headers"]["authorization"] == "Bearer sk-test-123"
        assert main(["solve", "Once upon", "--endpoint", server.url + "/v1", "--model", "nope"]) == 1
        err = capsys.readouterr().err
        assert "status failed: ModelNotFound:" in err and "it serves: toy" in err


# -- as a process --------------------------------------------------------------------------------------


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd), "COLUMNS": "100"}
    env.pop("FORCE_COLOR", None)
    return subprocess.run(
        [sys.executable, "-m", "spawnjoin.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@needs_solve
def test_the_command_in_a_pipe(backends: str, tmp_path: Path) -> None:
    save = tmp_path / "t.json"
    done = run_cli(
        ["solve", "Q", "--dialect", "threadweaver", "--backend", f"{backends}:make", "--save", str(save)],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert strip_rates(done.stdout.splitlines()[:3]) == TREE
    assert "\x1b[" not in done.stdout
    shown = run_cli(["show", str(save)], tmp_path)
    assert shown.returncode == 0 and strip_rates(shown.stdout.splitlines()[1:4]) == TREE
    failed = run_cli(["show", str(tmp_path / "missing.json")], tmp_path)
    assert failed.returncode == 2 and "no such file" in failed.stderr and failed.stdout == ""


# -- in a real terminal --------------------------------------------------------------------------------


class Tmux:
    """A private tmux server (its own socket) running one command in a 100x30 terminal."""

    def __init__(self, command: str, cwd: Path) -> None:
        self.socket = f"spawnjoin-test-{uuid.uuid4().hex[:8]}"
        env = f"PYTHONPATH={cwd} COLUMNS=100 LINES=30"
        script = (
            f"cd {cwd} && env {env} {sys.executable} -m spawnjoin.cli {command}; echo __EXIT__$?; sleep 60"
        )
        subprocess.run(
            [
                "tmux",
                "-L",
                self.socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "100",
                "-y",
                "30",
                script,
            ],
            check=True,
        )

    def capture(self) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, "capture-pane", "-p"], capture_output=True, text=True, check=True
        ).stdout

    def wait_for_exit(self, timeout: float = 60.0) -> tuple[str, list[str]]:
        """The exit status and the screens captured every 50 ms until the command ended."""
        screens: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.capture()
            screens.append(screen)
            if "__EXIT__" in screen:
                return screen.split("__EXIT__")[1].split()[0], screens
            time.sleep(0.05)
        raise AssertionError("the command did not finish:\n" + screens[-1])

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


@needs_tmux
def test_replay_in_a_real_terminal(tmp_path: Path) -> None:
    path = hand_trace().save(tmp_path / "t.json")
    tmux = Tmux(f"show {path} --replay --speed 4", tmp_path)
    try:
        status, screens = tmux.wait_for_exit()
    finally:
        tmux.close()
    assert status == "0"
    final = screens[-1]
    assert "root   done    16 tok" in final
    assert "└── b  failed   5 tok" in final
    assert "threads 3 (1 failed) · tokens 41 (36 sequential) · elapsed 6.5s" in final
    # the tree was on screen, redrawn, before the end: some earlier screen showed b still running
    assert any("└── b  running" in screen for screen in screens[:-1])


@needs_tmux
@needs_solve
def test_solve_draws_live_in_a_real_terminal(backends: str, tmp_path: Path) -> None:
    tmux = Tmux(f"solve Q --dialect threadweaver --backend {backends}:make_paced", tmp_path)
    try:
        status, screens = tmux.wait_for_exit()
    finally:
        tmux.close()
    assert status == "0"
    final = screens[-1]
    assert strip_rates([line for line in final.splitlines() if " tok " in line][:3]) == TREE
    assert "answer:" in final and "<Conclusion>42</Conclusion>" in final
    assert any("running" in screen for screen in screens[:-1])


def test_the_task_defaults_to_countdown_only_for_the_shipped_model() -> None:
    from spawnjoin.backends.scripted import ScriptedBackend
    from spawnjoin.cli import _task, build_parser

    parser = build_parser()
    shipped = parser.parse_args(["solve", "24 4 9 3"])
    assert _task(shipped, None) == "countdown"
    other = ScriptedBackend(["x"])
    assert _task(shipped, other) is None
    assert _task(parser.parse_args(["solve", "q", "--task", "none"]), None) is None
    assert _task(parser.parse_args(["solve", "q", "--task", "countdown"]), other) == "countdown"


def test_a_prompt_that_is_no_countdown_problem_exits_2_with_one_hint(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["solve", "hello world", "--no-live"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spawnjoin: error: not a Countdown problem: ") and "'hello world'" in err
    assert err.count("24 4 9 3") == 1
