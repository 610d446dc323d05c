"""The live view inside an application: several solves at once in one tree, plus an event hook of your own.

What it shows:

* Runtime events are plain frozen dataclasses on an `EventStream`. An application can listen to them
  (`add_hook`), count things (here: every spawn, every child thread), or forward them elsewhere.
* One `spawnjoin.view.LiveView` attached to one stream shows several concurrent solves: each solve
  publishes on its own stream, and a small hook forwards its events to the application's stream with the
  thread ids prefixed by the solve's name (thread ids are per solve, so two roots would both be "0").
  The application adds a thread of its own, "batch", whose children are the solves' roots, so the footer's
  sequential tokens are those of the longest solve.
* `ScriptedBackend` with a `delay` per token stands in for a model, so the tree animates without a GPU or
  a download: the "model" replays what the symbolic APR solver writes for each problem
  (`spawnjoin.tasks.countdown.apr`, beam 2), so every answer it finds verifies; the narrow search misses
  the last problem, which shows a tree that ends without one.

Run it:  python examples/live_view_app.py            (live tree in a terminal)
         python examples/live_view_app.py --no-live  (plain text at the end; what the test runs)

Expected output: the final tree ("batch", a line per problem, its sub searches below), then one line
per problem (`24 4 9 3 -> 4*(9-3) = 24 verified (threads 3, spawns 1)`), then `spawn hook: N spawns, M child threads`, equal to
the sum of the solves' own metrics (`metrics agree: True`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable

from rich.console import Console

import spawnjoin
from spawnjoin import Budget, EventStream, SolveResult
from spawnjoin.backends.base import GenerationRequest
from spawnjoin.backends.scripted import ScriptedBackend
from spawnjoin.events import Event, SolveFinished, Spawned, ThreadFinished, ThreadStarted
from spawnjoin.tasks.countdown import apr, parse_problem, verify_path
from spawnjoin.view import LiveView, ThreadTreeView, ViewState

PROBLEMS = ["24 4 9 3", "10 5 4 44 14", "86 90 2 8", "36 2 5 7 11"]
BATCH = "batch"  # the application's own thread id: the parent of every solve's root


class SpawnCounter:
    """A custom event hook: counts spawns and the child threads they started. Hooks run inline on the
    event loop, so they must be quick; this one only looks at the event's type."""

    def __init__(self) -> None:
        self.spawns = 0
        self.children = 0

    def __call__(self, event: Event) -> None:
        if isinstance(event, Spawned):
            self.spawns += 1
            self.children += len(event.child_ids)


def forward(name: str, label: str, offset: float, to: EventStream) -> Callable[[Event], None]:
    """A hook that re-publishes one solve's events on `to`, its thread ids prefixed with `name` and its root
    made a child of the application's "batch" thread.

    Each solve's events are timed from its own start; `offset` puts them on the application's clock. Each
    solve's `SolveFinished` is held back: the application announces the end of the batch itself.
    """

    def prefixed(thread_id: str | None) -> str | None:
        return None if thread_id is None else f"{name}/{thread_id}"

    def hook(event: Event) -> None:
        if isinstance(event, SolveFinished):
            return
        changes: dict[str, object] = {"time": event.time + offset, "thread_id": prefixed(event.thread_id)}
        if isinstance(event, ThreadStarted):
            changes["parent_id"] = prefixed(event.parent_id) or BATCH
            changes["depth"] = event.depth + 1
            if event.parent_id is None:
                changes["label"] = label  # name each root after its problem
        if isinstance(event, Spawned):
            changes["child_ids"] = tuple(f"{name}/{c}" for c in event.child_ids)
        to.emit(dataclasses.replace(event, **changes))

    return hook


def solver_model(problem: str, seed: int) -> Callable[[GenerationRequest], str]:
    """A stand-in model: for each context the runtime builds, what the symbolic APR solver wrote there."""
    tree = apr(parse_problem(problem), beam_size=2, seed=seed)
    written = {call.context: call.target for _, _, call in tree.calls()}
    return lambda request: written.get(request.prompt, "No solution found.\n")


async def solve_all(problems: list[str], *, live: bool, delay: float) -> list[SolveResult]:
    app_events = EventStream()  # the application's stream: the view listens here
    counter = SpawnCounter()  # one hook object, added to every solve's own stream below
    console = Console(width=110) if live else Console(width=110, color_system=None, soft_wrap=True)
    view = LiveView(app_events, console=console) if live else None
    state = ViewState()
    if view is None:
        app_events.add_hook(state.apply)  # no live view: keep a snapshot to print at the end
    t0 = time.perf_counter()
    # The batch thread: started, then "spawning" one child per problem (the ids the solves' roots get).
    app_events.emit(ThreadStarted(BATCH, None, 0, f"batch of {len(problems)}", "", 0.0))
    roots = tuple(f"p{i}/0" for i in range(len(problems)))
    app_events.emit(Spawned(BATCH, roots, len(problems), None, 0.0))

    async def one(index: int, problem: str) -> SolveResult:
        events = EventStream()
        events.add_hook(counter)
        events.add_hook(forward(f"p{index}", problem, time.perf_counter() - t0, app_events))
        return await spawnjoin.solve(
            problem,
            backend=ScriptedBackend(solver_model(problem, seed=index), delay=delay),
            task="countdown",
            budget=Budget(max_threads=32),
            events=events,
        )

    # The `with` block draws live until it ends, then leaves the final frame with every thread.
    with view if view is not None else contextlib.nullcontext():
        results = await asyncio.gather(*(one(i, p) for i, p in enumerate(problems)))
        now, solved = time.perf_counter() - t0, sum(r.answer is not None for r in results)
        app_events.emit(ThreadFinished(BATCH, "done", None, now))
        app_events.emit(SolveFinished("done", f"{solved}/{len(problems)} solved", now))
    if view is None:
        console.print(ThreadTreeView(state))

    for problem, result in zip(problems, results, strict=True):
        ok = result.answer is not None and verify_path(parse_problem(problem), result.text).ok
        print(f"{problem} -> {result.answer or 'no answer'}{' verified' if ok else ''}"
              f" (threads {result.metrics.threads}, spawns {result.metrics.spawns})")
    print(f"spawn hook: {counter.spawns} spawns, {counter.children} child threads")
    agree = (counter.spawns == sum(r.metrics.spawns for r in results)
             and counter.children == sum(r.metrics.threads - 1 for r in results))
    print(f"metrics agree: {agree}")
    return list(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-live", action="store_true", help="no live view: print the final tree as text")
    parser.add_argument("--delay", type=float, default=0.02, help="seconds per token (default: 0.02)")
    parser.add_argument("problems", nargs="*", default=PROBLEMS, help="Countdown problems, target first")
    args = parser.parse_args()
    asyncio.run(solve_all(args.problems, live=not args.no_live, delay=args.delay))


if __name__ == "__main__":
    main()
