"""The `spawnjoin` command: `spawnjoin solve PROMPT ...` and `spawnjoin show TRACE ...`.

Output of `solve`:

* stdout is a terminal (and neither `--no-live` nor `--json`): the thread tree redraws live while the solve
  runs; the final tree stays on screen, followed by the answer.
* otherwise: nothing while it runs; at the end the final tree, its totals and the answer as plain text
  (no colours, no cursor movement), so the output can be piped or logged.
* `--json`: one JSON object (status, answer, error, metrics, text, trace path) and nothing else on stdout.

Diagnostics go to stderr. Exit status: 0 when the solve finished (`done`), 1 when it failed, was cancelled
or hit its deadline, or a backend error stopped it, 2 for a bad option, 130 when interrupted. With `--save`
the trace is written whatever the outcome, partial when the solve did not finish.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from spawnjoin._exceptions import ConfigError, SpawnJoinError
from spawnjoin.backends.base import Backend, SamplingParams
from spawnjoin.budget import Budget
from spawnjoin.events import EventStream
from spawnjoin.trace import Trace

__all__ = ["main", "build_parser", "make_backend"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

_BUDGET_FLAGS = ("max_threads", "max_depth", "max_children", "context_window", "max_total_tokens", "deadline")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `spawnjoin` command."""
    parser = argparse.ArgumentParser(
        prog="spawnjoin", description="Adaptive parallel reasoning: spawn and join."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    solve = commands.add_parser("solve", help="solve a problem and show its thread tree")
    solve.add_argument("prompt", help="the problem (for --task countdown: e.g. '24 4 9 3': target first)")
    where = solve.add_argument_group("backend (default: the embedded model)")
    where.add_argument(
        "--endpoint", metavar="URL", help="OpenAI-compatible server, e.g. http://localhost:8000/v1"
    )
    where.add_argument(
        "--model",
        metavar="NAME",
        help="model at --endpoint (default: the one it serves), or a local model directory",
    )
    where.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the API key")
    where.add_argument("--backend", metavar="MODULE:FACTORY", help="import a callable returning a Backend")
    solve.add_argument(
        "--dialect", choices=("apr", "threadweaver", "prompted"), default="apr", help="default: apr"
    )
    solve.add_argument(
        "--task",
        choices=("countdown", "none"),
        default=None,
        help="default: countdown with the shipped model (no --endpoint/--model/--backend), else none",
    )
    limits = solve.add_argument_group("budget (default: spawnjoin.Budget's)")
    limits.add_argument("--max-threads", type=int, metavar="N", help="most threads, the root included")
    limits.add_argument("--max-depth", type=int, metavar="N", help="deepest spawn level (root is 0)")
    limits.add_argument("--max-children", type=int, metavar="N", help="most children per spawn")
    limits.add_argument("--context-window", type=int, metavar="N", help="per-thread context window in tokens")
    limits.add_argument("--max-total-tokens", type=int, metavar="N", help="most tokens over all threads")
    limits.add_argument("--deadline", type=float, metavar="S", help="wall-clock seconds for the whole solve")
    sampling = solve.add_argument_group("sampling")
    sampling.add_argument("--temperature", type=float, default=0.0, metavar="T", help="default: 0 (greedy)")
    sampling.add_argument("--seed", type=int, metavar="S", help="sampling seed")
    out = solve.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print one JSON object instead of the tree")
    out.add_argument("--no-live", action="store_true", help="no live view, even on a terminal")
    out.add_argument("--save", metavar="TRACE.json", help="write the trace (also a partial one) to this file")

    show = commands.add_parser("show", help="show a saved trace")
    show.add_argument("trace", help="a trace written by --save or Trace.save")
    show.add_argument("--html", metavar="OUT.html", help="also write a self-contained HTML page")
    show.add_argument("--replay", action="store_true", help="play the solve back live")
    show.add_argument(
        "--speed", type=float, default=1.0, metavar="X", help="replay speed factor (default: 1)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default: `sys.argv[1:]`) and return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "solve":
            return _solve(args)
        return _show(args)
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except SpawnJoinError as exc:
        _error(f"{type(exc).__name__}: {exc}")
        return EXIT_FAILED


def _error(message: str) -> None:
    print(f"spawnjoin: error: {message}", file=sys.stderr)


def _note(message: str) -> None:
    print(f"spawnjoin: {message}", file=sys.stderr)


# -- solve -------------------------------------------------------------------------------------------


def _task(args: argparse.Namespace, backend: Backend | None) -> str | None:
    """The task to solve under: as asked, else Countdown for the shipped (Countdown) model."""
    if args.task is not None:
        return None if args.task == "none" else args.task
    return "countdown" if backend is None else None


def make_backend(args: argparse.Namespace) -> Backend | None:
    """The backend the options ask for; None means `solve`'s default (the embedded model).

    Raises:
        ConfigError: An option is missing or wrong (the message says which).
    """
    if args.backend:
        if args.endpoint or args.model:
            raise ConfigError("--backend replaces --endpoint and --model: give one or the other")
        return _import_backend(args.backend)
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise ConfigError(f"--api-key-env {args.api_key_env}: that environment variable is not set")
    if args.endpoint:
        from spawnjoin.backends.openai import OpenAICompletions

        return OpenAICompletions(args.endpoint, args.model, api_key)
    if args.api_key_env:
        raise ConfigError("--api-key-env needs --endpoint (the embedded model takes no key)")
    if args.model:
        try:
            from spawnjoin.backends.embedded import EmbeddedBackend
        except ImportError as exc:
            raise ConfigError(
                f"--model {args.model} without --endpoint runs it in-process, which needs the 'local' extra: "
                f"pip install 'spawnjoin[local]' ({exc})"
            ) from None
        return EmbeddedBackend(args.model)
    return None


def _import_backend(spec: str) -> Backend:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"--backend {spec!r}: write it as MODULE:FACTORY, e.g. mypkg.backends:make")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"--backend {spec!r}: {exc}") from None
    backend = factory()
    if not isinstance(backend, Backend):
        raise ConfigError(f"--backend {spec!r} returned {type(backend).__name__}, not a spawnjoin Backend")
    return backend


def _budget(args: argparse.Namespace) -> Budget:
    given = {name: getattr(args, name) for name in _BUDGET_FLAGS if getattr(args, name) is not None}
    try:
        return Budget(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(problems) from None


def _sampling(args: argparse.Namespace) -> SamplingParams:
    try:
        return SamplingParams(temperature=args.temperature, seed=args.seed)
    except ValidationError as exc:
        raise ConfigError("; ".join(f"--{e['loc'][0]}: {e['msg']}" for e in exc.errors())) from None


async def _run_solve(args: argparse.Namespace, events: EventStream) -> Any:
    from spawnjoin.runtime import solve

    budget, sampling = _budget(args), _sampling(args)
    backend = make_backend(args)
    # A backend we made is ours to close; solve() closes the default one it makes itself.
    async with contextlib.AsyncExitStack() as stack:
        if backend is not None:
            await stack.enter_async_context(backend)
        return await solve(
            args.prompt,
            backend=backend,
            dialect=args.dialect,
            budget=budget,
            sampling=sampling,
            task=_task(args, backend),
            events=events,
            trace_path=args.save,
        )


def _solve(args: argparse.Namespace) -> int:
    from rich.console import Console

    from spawnjoin.view.live import LiveView
    from spawnjoin.view.state import ViewState

    console = Console()
    live = not args.json and not args.no_live and console.is_terminal
    events = EventStream()
    state: ViewState | None = None
    view: LiveView | None = None
    if live:
        view = LiveView(events, console=console)
    elif not args.json:
        state = ViewState()
        events.add_hook(state.apply)
    try:
        with view if view is not None else contextlib.nullcontext():
            result = asyncio.run(_run_solve(args, events))
    except KeyboardInterrupt:
        _error("interrupted" + (f"; the partial trace is in {args.save}" if args.save else ""))
        return EXIT_INTERRUPTED
    except SpawnJoinError as exc:
        partial = getattr(exc, "result", None)
        if args.save and partial is not None and isinstance(getattr(partial, "trace", None), Trace):
            partial.trace.save(args.save)
            _note(f"partial trace saved to {args.save}")
        raise

    if args.json:
        print(json.dumps(_json_result(result, args.save), indent=1))
    else:
        if state is not None:
            from spawnjoin.view.tree import ThreadTreeView

            console.print(ThreadTreeView(state))
        console.print("answer:", style="bold", end=" " if result.answer is None else "\n")
        console.print(result.answer if result.answer is not None else "(none)", markup=False, highlight=False)
    if args.save:
        _note(f"trace saved to {args.save}")
    if result.status != "done":
        _error(f"the solve ended with status {result.status}" + (f": {result.error}" if result.error else ""))
        return EXIT_FAILED
    return EXIT_OK


def _json_result(result: Any, save: str | None) -> dict[str, Any]:
    return {
        "status": result.status,
        "answer": result.answer,
        "error": result.error,
        "metrics": result.metrics.model_dump(),
        "text": result.text,
        "trace": str(Path(save)) if save else None,
    }


# -- show --------------------------------------------------------------------------------------------


def _show(args: argparse.Namespace) -> int:
    from rich.console import Console

    from spawnjoin.view.html import write_html
    from spawnjoin.view.replay import print_trace, replay

    if args.speed <= 0:
        raise ConfigError(f"--speed must be positive, got {args.speed}")
    try:
        trace = Trace.load(args.trace)
    except FileNotFoundError:
        raise ConfigError(f"{args.trace}: no such file") from None
    except ValueError as exc:  # bad JSON, wrong schema version, or not a trace
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"{args.trace} is not a readable spawnjoin trace: {first}") from None
    console = Console()
    if args.replay:
        replay(trace, speed=args.speed, console=console)
    else:
        print_trace(trace, console)
    if args.html:
        path = write_html(trace, args.html, title=f"spawnjoin trace: {Path(args.trace).name}")
        _note(f"wrote {path}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
