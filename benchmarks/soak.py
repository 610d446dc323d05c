"""Soak test: batches of 1,000 concurrent APR solves through `OpenAICompletions` over real HTTP.

The server is the in-repo toy server of ``tests/servers`` (`FaultServer`: vLLM's flavour of
``/v1/completions`` and ``/tokenize``, stdlib HTTP on 127.0.0.1, no faults queued) running in a child
process, so its threads do not share this process's GIL. Its toy model is replaced by `AprScript`, which
writes APR spawn blocks: every solve is a small tree (by default a root and two children: four requests,
about 100 tokens), and the scheduler, the dialect, the retry/limit layers and the openai client all do their
real work. vLLM on this 2-core CPU would need hours for thousands of solves; the toy server answers at once,
so this measures spawnjoin's client side under load. The backend caps requests in flight at 64
(``--max-concurrency``): the toy server runs a thread per connection, and openai's client keeps at most 100
idle connections alive; the 1,000 solves of a batch are all in flight, their requests queue for a slot.

Measured: event-loop lag (a ticker task records how late each ``asyncio.sleep(0.01)`` wakes up; p50, p99
and max; and the loop's own CPU time between ticks, which preemption by other processes does not inflate),
the client's CPU time per solve, RSS after each batch (after a garbage collection: memory is flat when the last batch ends where the
first did) and its peak, sampled every 0.25 s, total wall time and solves per second. Run from the repository
root::

    python benchmarks/soak.py [--solves 1000] [--batches 3] [--width 2] [--depth 1] [--max-concurrency 64]

Exits non-zero if any solve did not finish with the expected thread tree.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import multiprocessing
import multiprocessing.synchronize
import statistics
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import spawnjoin  # noqa: E402
from spawnjoin import Budget  # noqa: E402
from spawnjoin.backends.openai import OpenAICompletions  # noqa: E402
from spawnjoin.dialects.apr import JOIN_CLOSE, SPAWN_CLOSE, SPAWN_OPEN  # noqa: E402
from tests.servers._http import free_port  # noqa: E402
from tests.servers.toy_model import WORDS, ToyModel, tokenize  # noqa: E402
from training.memory import peak_resident_gb, resident_gb  # noqa: E402

ROOT_PROMPT = "Moving to Node #0\nCurrent State: 24:[1, 2, 3], Operations: []\n"


class AprScript(ToyModel):
    """The toy model, scripted to grow APR spawn trees of a given width and depth.

    Like the toy model it is a pure function of the text so far (the thread's context plus what it wrote), so
    it serves any number of concurrent requests. A thread at a node shallower than `depth` writes `width`
    ``Generated Node`` lines and a spawn block for them; a deeper one writes `words` words and ends; after a
    join a thread writes a short conclusion and ends. Every script uses printable ASCII only, so it can also
    be forced on a character-level model (``overhead.py`` does that on vLLM with a literal regex).

    Args:
        width: Children per spawn.
        depth: Spawn levels below the root (0: the root only).
        words: Words a leaf writes (a conclusion writes half as many).
    """

    def __init__(self, width: int = 2, depth: int = 1, words: int = 16) -> None:
        super().__init__(eos_every=0)
        self.width, self.depth, self.words = width, depth, words

    def threads_per_solve(self) -> int:
        """Threads in one solve's tree."""
        return sum(self.width**level for level in range(self.depth + 1))

    def _filler(self, node: str, count: int) -> str:
        seed = zlib.crc32(node.encode())
        return " ".join(WORDS[(seed + 7 * k) % len(WORDS)] for k in range(count)) + "\n"

    def _spawn(self, node: str) -> str:
        level = node.count(",") + 1
        lines = [
            f"Generated Node #{node},{i}: 24:[{i}, 2] Operation: 3+{i}={3 + i}\n" for i in range(self.width)
        ]
        lines.append(SPAWN_OPEN + "\n")
        lines += [
            f"<Start Sub Search {i} at level {level}> Moving to Node #{node},{i}\n" for i in range(self.width)
        ]
        return "".join(lines) + SPAWN_CLOSE

    def remaining(self, text: str) -> str:
        """What the thread whose text so far is `text` writes next in its current call (ends at EOS)."""
        node = text[len("Moving to Node #") : text.index("\n")]
        joined = JOIN_CLOSE + "\n"
        if joined in text:
            done, script = text.rpartition(joined)[2], self._filler(node + "c", max(self.words // 2, 1))
        else:
            done = text.split("\n", 2)[2]  # past the two header lines of an APR thread prompt
            script = self._spawn(node) if node.count(",") < self.depth else self._filler(node, self.words)
        return script[len(done) :] if script.startswith(done) else ""

    def next_token(self, text: str) -> str | None:
        rest = self.remaining(text)
        return tokenize(rest)[0] if rest else None


def _serve(port: int, width: int, depth: int, words: int, ready: multiprocessing.synchronize.Event) -> None:
    """Child process: the toy server with `AprScript` on `port`, until terminated."""
    from tests.servers import FaultServer, _http

    # socketserver's default listen backlog (5) drops connection bursts; a real server's is larger.
    _http._Server.request_queue_size = 4096
    server = FaultServer(port=port, max_model_len=8192)
    server.model = AprScript(width, depth, words)
    server.start()
    ready.set()
    while True:
        time.sleep(3600)


@dataclass
class ToyServerProcess:
    """The scripted toy server in a child process (``with`` starts and terminates it)."""

    width: int = 2
    depth: int = 1
    words: int = 16
    port: int = field(default_factory=free_port)
    _process: multiprocessing.process.BaseProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> ToyServerProcess:
        ctx = multiprocessing.get_context("spawn")
        ready = ctx.Event()
        self._process = ctx.Process(
            target=_serve, args=(self.port, self.width, self.depth, self.words, ready), daemon=True
        )
        self._process.start()
        if not ready.wait(60):
            raise RuntimeError("the toy server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.join(10)


def rss_bytes() -> int:
    """This process's resident memory now (Linux ``/proc``; elsewhere the peak so far)."""
    return int((resident_gb() or peak_resident_gb()) * 2**30)


class LoopMonitor:
    """A ticker task: how late each ``asyncio.sleep(interval)`` wakes up, and the peak RSS.

    Each tick also records the CPU time the loop's thread used meanwhile (``time.thread_time``): the work the
    loop itself did, which the operating system's preemption does not inflate. On a machine shared with
    busier processes the wall-clock lag includes waiting for a CPU; the busy time does not.
    """

    def __init__(self, interval: float = 0.01, rss_every: float = 0.25) -> None:
        self.interval, self.rss_every = interval, rss_every
        self.lags: list[float] = []
        self.busy: list[float] = []
        self.peak_rss = rss_bytes()
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        clock, cpu = time.perf_counter, time.thread_time
        next_rss = clock()
        while True:
            start, start_cpu = clock(), cpu()
            await asyncio.sleep(self.interval)
            now = clock()
            self.lags.append(max(now - start - self.interval, 0.0))
            self.busy.append(cpu() - start_cpu)
            if now >= next_rss:
                self.peak_rss = max(self.peak_rss, rss_bytes())
                next_rss = now + self.rss_every

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @staticmethod
    def percentile(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(int(q * len(ordered)), len(ordered) - 1)] if ordered else 0.0

    def report(self) -> str:
        """Wall-clock lag and loop CPU time per tick: p50, p99, max (milliseconds)."""

        def stats(values: list[float]) -> str:
            p50, p99 = self.percentile(values, 0.5), self.percentile(values, 0.99)
            return (
                f"p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, max {max(values, default=0) * 1e3:.1f} ms"
            )

        return (
            f"event-loop lag over {len(self.lags)} ticks of asyncio.sleep({self.interval:g}): {stats(self.lags)}\n"
            f"loop CPU time between ticks (own work, no preemption): {stats(self.busy)}"
        )


@dataclass
class Batch:
    """One batch of concurrent solves."""

    seconds: float
    cpu: float
    done: int
    wrong: list[str]
    tokens: int
    rss_after: int


async def run_batch(backend: OpenAICompletions, solves: int, threads: int, budget: Budget) -> Batch:
    start, cpu = time.perf_counter(), time.process_time()
    results = await asyncio.gather(
        *(spawnjoin.solve(ROOT_PROMPT, backend=backend, dialect="apr", budget=budget) for _ in range(solves))
    )
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    wrong = [
        f"{r.status} threads={r.metrics.threads} {r.error or ''}"
        for r in results
        if r.status != "done" or r.metrics.threads != threads
    ]
    tokens = sum(r.metrics.total_tokens for r in results)
    done = len(results) - len(wrong)
    del results  # traces are dropped here: what stays in memory after a batch is spawnjoin's own
    gc.collect()
    return Batch(seconds, cpu, done, wrong, tokens, rss_bytes())


async def soak(args: argparse.Namespace, url: str, threads: int) -> int:
    # Generous timeouts: on a shared machine the toy server may wait long for a CPU (it is niced like us).
    backend = OpenAICompletions(
        url, max_concurrency=args.max_concurrency, read_timeout=120.0, connect_timeout=60.0
    )
    budget = Budget(
        max_tokens_per_call=256, max_threads=threads, max_children=args.width, max_depth=args.depth
    )
    gc.collect()
    rss_start = rss_bytes()
    monitor = LoopMonitor()
    monitor.start()
    batches: list[Batch] = []
    wall, cpu = time.perf_counter(), time.process_time()
    for n in range(args.batches):
        batch = await run_batch(backend, args.solves, threads, budget)
        batches.append(batch)
        print(
            f"batch {n + 1}: {batch.done}/{args.solves} solves ok in {batch.seconds:.1f} s "
            f"({args.solves / batch.seconds:.1f} solves/s, {batch.tokens / batch.seconds:,.0f} tokens/s), "
            f"client CPU {batch.cpu:.1f} s, RSS after {batch.rss_after / 2**20:.1f} MiB",
            flush=True,
        )
        for line in batch.wrong[:3]:
            print(f"  not as expected: {line}")
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    await monitor.stop()
    await backend.aclose()

    total = args.solves * args.batches
    first, last = batches[0].rss_after, batches[-1].rss_after
    print()
    print(
        f"solves: {total} ({args.batches} batches of {args.solves} concurrent), {threads} threads each, "
        f"{sum(b.done for b in batches)} as expected"
    )
    print(
        f"wall time: {wall:.1f} s  ->  {total / wall:.1f} solves/s, {total * threads / wall:.0f} threads/s, "
        f"{sum(b.tokens for b in batches) / wall:,.0f} tokens/s"
    )
    print(f"client CPU: {cpu:.1f} s ({cpu / wall:.0%} of one core), {cpu / total * 1e3:.1f} ms per solve")
    print(monitor.report())
    print(
        f"RSS: start {rss_start / 2**20:.1f} MiB, after batch 1 {first / 2**20:.1f} MiB, after batch "
        f"{len(batches)} {last / 2**20:.1f} MiB ({(last - first) / 2**20:+.1f} MiB), "
        f"peak {monitor.peak_rss / 2**20:.1f} MiB"
    )
    print(
        f"per-batch wall: {', '.join(f'{b.seconds:.1f}' for b in batches)} s "
        f"(median {statistics.median(b.seconds for b in batches):.1f} s)"
    )
    return 0 if all(not b.wrong for b in batches) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solves", type=int, default=1000, help="concurrent solves per batch")
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--width", type=int, default=2, help="children per spawn")
    parser.add_argument("--depth", type=int, default=1, help="spawn levels below the root")
    parser.add_argument("--words", type=int, default=16, help="words a leaf thread writes")
    parser.add_argument(
        "--max-concurrency", type=int, default=64, help="the backend's cap on requests in flight"
    )
    args = parser.parse_args()
    with ToyServerProcess(args.width, args.depth, args.words) as server:
        threads = AprScript(args.width, args.depth).threads_per_solve()
        print(
            f"server: in-repo toy server (tests/servers FaultServer + AprScript) in a child process at "
            f"{server.url}; client: OpenAICompletions, max_concurrency {args.max_concurrency}, dialect apr"
        )
        return asyncio.run(soak(args, server.url, threads))


if __name__ == "__main__":
    sys.exit(main())
