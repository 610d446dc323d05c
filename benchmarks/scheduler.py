"""Scheduler throughput on one core with an in-memory backend (no engine, no tokenizer).

Measures what spawnjoin's own machinery costs: one root spawns N children with the `apr` dialect (isolated
contexts), every child streams C one-token chunks, and the root joins them all. Prints streamed chunks per
second and the number of threads that were live at once, as medians of a few runs.

Targets (issue 7): >= 50,000 streamed chunks/s and 10,000 concurrent threads on one core.

    python benchmarks/scheduler.py [--children 10000] [--chunks 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator

import spawnjoin
from spawnjoin import Budget
from spawnjoin.backends.base import Backend, Chunk, Finish, GenerationRequest
from spawnjoin.events import ThreadFinished, ThreadStarted


class MemoryBackend(Backend):
    """Streams fixed text instantly; yields to the event loop every `yield_every` chunks."""

    name = "memory"

    def __init__(self, children: int, chunks: int, yield_every: int = 10) -> None:
        self.children, self.chunks, self.yield_every = children, chunks, yield_every
        lines = [f"Generated Node #0,{i}: 24:[1, 2] Operation: 3+{i}={3 + i}\n" for i in range(children)]
        lines.append("<Calling Sub Searches>\n")
        lines += [f"<Start Sub Search {i} at level 1> Moving to Node #0,{i}\n" for i in range(children)]
        self.spawn_text = "".join(lines) + "<End Calling Sub Searches>"

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk | Finish]:
        prompt = request.prompt
        if prompt.startswith("Moving to Node #0\n"):
            if "<Sub Searches>" in prompt:
                yield Finish("eos", completion_tokens=0)
            else:
                yield Chunk(self.spawn_text[:-26], 1)
                yield Finish("stop", "<End Calling Sub Searches>", completion_tokens=1)
            return
        chunk = Chunk("a", 1)
        for i in range(self.chunks):
            yield chunk
            if i % self.yield_every == self.yield_every - 1:
                await asyncio.sleep(0)
        yield Finish("eos", completion_tokens=self.chunks)


async def run_once(children: int, chunks: int) -> tuple[float, int, int]:
    backend = MemoryBackend(children, chunks)
    live = peak = 0

    def hook(event: object) -> None:
        nonlocal live, peak
        if isinstance(event, ThreadStarted):
            live += 1
            peak = max(peak, live)
        elif isinstance(event, ThreadFinished):
            live -= 1

    start = time.perf_counter()
    result = await spawnjoin.solve(
        "Moving to Node #0\nCurrent State: 24:[1, 2, 3], Operations: []\n",
        backend=backend,
        budget=Budget(max_threads=children + 1, max_children=children),
        on_event=hook,
    )
    elapsed = time.perf_counter() - start
    assert result.status == "done" and result.metrics.threads == children + 1, result.error
    return elapsed, result.metrics.total_tokens, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=10_000)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runs = [asyncio.run(run_once(args.children, args.chunks)) for _ in range(args.repeat)]
    seconds = statistics.median(r[0] for r in runs)
    chunks = runs[0][1]
    print(f"threads: {args.children + 1}  peak concurrent: {max(r[2] for r in runs)}")
    print(f"streamed chunks: {chunks}  median wall: {seconds:.2f} s  -> {chunks / seconds:,.0f} chunks/s")
    print(f"target 50,000 chunks/s: ratio {chunks / seconds / 50_000:.2f}")


if __name__ == "__main__":
    main()
