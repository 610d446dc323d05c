"""How much does the live view slow the event stream down?

The same synthetic solve (THREADS children streaming TOKENS one-token chunks each, round robin, the event
loop yielding after every round as the scheduler does) is emitted through an `EventStream` twice: with no
consumer, and with a `LiveView` attached that redraws a 120x40 terminal (a StringIO with force_terminal) at
8 Hz. Two scenarios: flat out (the loop only yields between rounds: the worst case for the hook's cost), and
paced (a short sleep between rounds, as when a backend streams; long enough for the view to redraw several
times, so it measures what redraws take from decoding). Each figure is the median of three runs of each.

    python benchmarks/view_overhead.py [--threads 200] [--tokens 500]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import time

from rich.console import Console

from spawnjoin.events import (
    CallFinished,
    CallStarted,
    Event,
    EventStream,
    SolveFinished,
    Spawned,
    ThreadFinished,
    ThreadStarted,
    TokensGenerated,
)
from spawnjoin.view.live import LiveView
from spawnjoin.view.state import ViewState
from spawnjoin.view.tree import ThreadTreeView


def synthetic_rounds(threads: int, tokens: int) -> list[list[Event]]:
    """The solve's events, grouped into the rounds between which the event loop yields."""
    kids = tuple(f"0.{i}" for i in range(threads))
    opening: list[Event] = [
        ThreadStarted("0", None, 0, "root", "", 0.0),
        Spawned("0", kids, threads, None, 0.0),
    ]
    for i, kid in enumerate(kids):
        opening += [ThreadStarted(kid, "0", 1, f"worker {i}", "", 0.0), CallStarted(kid, 0, 50, None, 0.0)]
    rounds = [opening]
    for step in range(tokens):
        rounds.append([TokensGenerated(kid, f" w{step}", 1, step * 0.001) for kid in kids])
    end = tokens * 0.001
    closing: list[Event] = []
    for kid in kids:
        closing += [
            CallFinished(kid, 0, "eos", None, tokens, 40, end),
            ThreadFinished(kid, "done", None, end),
        ]
    closing += [ThreadFinished("0", "done", None, end), SolveFinished("done", "42", end)]
    rounds.append(closing)
    return rounds


async def emit_all(stream: EventStream, rounds: list[list[Event]], pause: float) -> float:
    """Emit every round, yielding to the loop (for `pause` seconds) between rounds; returns the seconds taken."""
    emit = stream.emit
    started = time.perf_counter()
    for events in rounds:
        for event in events:
            emit(event)
        await asyncio.sleep(pause)
    return time.perf_counter() - started


def run(rounds: list[list[Event]], *, live: bool, pause: float = 0.0) -> tuple[float, float, int]:
    """(seconds emitting, seconds to stop the view, redraws) of one run."""
    stream = EventStream()
    if not live:
        return asyncio.run(emit_all(stream, rounds, pause)), 0.0, 0
    console = Console(file=io.StringIO(), force_terminal=True, width=120, height=40)
    view = LiveView(stream, console=console, refresh_per_second=8)
    view.start()
    seconds = asyncio.run(emit_all(stream, rounds, pause))
    stopping = time.perf_counter()
    view.stop()
    return seconds, time.perf_counter() - stopping, view.statistics().renders


def frame_cost(rounds: list[list[Event]], frames: int = 20) -> float:
    """Seconds to render one 40-line frame of the final tree into a terminal console."""
    state = ViewState.from_events(e for r in rounds for e in r)
    console = Console(file=io.StringIO(), force_terminal=True, width=120, height=40)
    started = time.perf_counter()
    for _ in range(frames):
        console.print(ThreadTreeView(state, max_rows=37))
    return (time.perf_counter() - started) / frames


def apply_rate(rounds: list[list[Event]]) -> float:
    """Events per second `ViewState.apply` absorbs (the work a redraw does before drawing)."""
    events = [e for r in rounds for e in r]
    state = ViewState()
    started = time.perf_counter()
    state.apply_all(events)
    return len(events) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--pause",
        type=float,
        default=0.001,
        help="seconds between rounds in the paced scenario (default: 0.001)",
    )
    args = parser.parse_args()
    rounds = synthetic_rounds(args.threads, args.tokens)
    n = sum(len(r) for r in rounds)
    print(f"{args.threads} threads x {args.tokens} tokens = {n:,} events; median of {args.repeats} runs")
    for name, pause in (("flat out", 0.0), (f"paced, {args.pause * 1000:g} ms between rounds", args.pause)):
        bare, viewed, stops, renders = [], [], [], []
        for _ in range(args.repeats):
            bare.append(run(rounds, live=False, pause=pause)[0])
            seconds, stop, count = run(rounds, live=True, pause=pause)
            viewed.append(seconds)
            stops.append(stop)
            renders.append(count)
        without, with_view = n / statistics.median(bare), n / statistics.median(viewed)
        print(f"{name}:")
        print(f"  without live view: {without:12,.0f} events/s")
        print(f"  with live view:    {with_view:12,.0f} events/s  ({statistics.median(renders):.0f} redraws)")
        print(f"  ratio (with / without): {with_view / without:.3f}")
        print(f"  final drain + frame on stop: {statistics.median(stops) * 1000:.1f} ms")
    print(
        f"one 40-line frame: {frame_cost(rounds) * 1000:.2f} ms; ViewState.apply: {apply_rate(rounds):,.0f} events/s"
    )


if __name__ == "__main__":
    main()
