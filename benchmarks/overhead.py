"""spawnjoin's wall-time overhead over the raw openai client, on the same requests in the same order.

Workload: APR solves whose threads spawn children that spawn again (by default width 3, depth 2: 13 threads
and 17 streamed requests per solve), scripted by `AprScript` from ``benchmarks/soak.py``.

Server: the real vLLM CPU server when ``$SPAWNJOIN_VLLM_URL`` is set (``source .ci/vllm.sh``): its tiny random
model is made to write the script by structured outputs, one literal regex per request. Otherwise (or with
``--server toy``) the in-repo toy server of ``tests/servers`` in a child process, with `AprScript` as its
model. The report says which.

(a) ``spawnjoin.solve(..., dialect="apr", backend=OpenAICompletions(...))``: scheduler, dialect, retry loop,
    limits, and its ``/tokenize`` call per request that sizes ``max_tokens`` to the context window. On vLLM the
    backend is a subclass whose ``_body`` adds the regex (once per request, nothing per token).
(b) The raw ``openai.AsyncOpenAI`` client: the request bodies spawnjoin sent in a recording run, replayed
    thread by thread (each with a fresh request id, as spawnjoin gives): each thread's requests in order, each
    streamed to the end and its text joined; after a request that spawned, the thread's children run
    concurrently (``asyncio.gather``), then its next request. The replayed texts are checked against spawnjoin's.

One process, one server: a warm-up of each, then ``--repeat`` rounds alternating which goes first; the medians of
wall time (target: spawnjoin adds at most 5 %) and of this process's CPU time (robust when other processes
compete for the CPU) are printed with their ratios. Run from the repository root::

    python benchmarks/overhead.py [--server auto|vllm|toy] [--repeat 5] [--solves N] [--width 3] [--depth 2]
                                  [--no-count-tokens]

``--no-count-tokens`` drops spawnjoin's ``/tokenize`` round trip before each request (as with a server that has
no ``/tokenize``), which separates its cost from the rest of spawnjoin's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import openai  # noqa: E402

import spawnjoin  # noqa: E402
from benchmarks.soak import ROOT_PROMPT, AprScript, ToyServerProcess  # noqa: E402
from spawnjoin import Budget  # noqa: E402
from spawnjoin.backends.base import GenerationRequest  # noqa: E402
from spawnjoin.backends.openai import OpenAICompletions  # noqa: E402
from spawnjoin.trace import Trace  # noqa: E402

_REGEX_SPECIAL = set("\\.^$*+?{}[]|()")


def literal_regex(text: str) -> str:
    """A regex matching exactly `text` (only regex metacharacters escaped; newlines as ``\\n``)."""
    return "".join("\\n" if c == "\n" else f"\\{c}" if c in _REGEX_SPECIAL else c for c in text)


class ScriptedCompletions(OpenAICompletions):
    """`OpenAICompletions` that can force `AprScript`'s text on vLLM and record the bodies it sends.

    Args:
        script: When given, each request gets a structured-outputs regex matching the script's rest.
        record: When given, each request body is stored here under its prompt.
        count: False: `count_tokens` answers None without asking ``/tokenize`` (a server without one).
    """

    def __init__(
        self,
        *args: Any,
        script: AprScript | None = None,
        record: dict[str, dict[str, Any]] | None = None,
        count: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.script, self.record, self.count = script, record, count

    async def count_tokens(self, text: str) -> int | None:
        return await super().count_tokens(text) if self.count else None

    async def _body(self, request: GenerationRequest) -> dict[str, Any]:
        body = await super()._body(request)
        if self.script is not None:
            regex = literal_regex(self.script.remaining(request.prompt))
            body["extra_body"] = {**(body["extra_body"] or {}), "structured_outputs": {"regex": regex}}
        if self.record is not None:
            self.record[request.prompt] = body
        return body


@dataclass
class Plan:
    """One thread's requests for the raw replay, and the children to run after some of them."""

    bodies: list[dict[str, Any]]
    texts: list[str]
    children: dict[int, list[Plan]] = field(default_factory=dict)

    def count(self) -> tuple[int, int]:
        """(threads, requests) in this subtree."""
        threads, requests = 1, len(self.bodies)
        for group in self.children.values():
            for child in group:
                t, r = child.count()
                threads, requests = threads + t, requests + r
        return threads, requests


def plan_of(trace: Trace, thread_id: str, bodies: dict[str, dict[str, Any]]) -> Plan:
    """The replay plan of a recorded solve's thread `thread_id`."""
    thread = trace.threads[thread_id]
    texts = [call.text.removesuffix(call.matched_stop or "") for call in thread.calls]
    plan = Plan([bodies[call.context] for call in thread.calls], texts)
    for spawn in thread.spawns:
        plan.children[spawn.after_call] = [plan_of(trace, child, bodies) for child in spawn.children]
    return plan


async def replay(client: openai.AsyncOpenAI, plan: Plan, check: bool = False) -> None:
    """Issue `plan`'s requests with the raw client in spawnjoin's dependency order."""
    for index, body in enumerate(plan.bodies):
        # As spawnjoin does, every request gets its own id (vLLM refuses two running requests with one id).
        headers = {"X-Request-Id": uuid.uuid4().hex}
        stream = await client.completions.create(**{**body, "extra_headers": headers})
        parts = []
        async for event in stream:
            if event.choices and event.choices[0].text:
                parts.append(event.choices[0].text)
        if check and "".join(parts) != plan.texts[index]:
            raise AssertionError(f"the raw replay got other text than spawnjoin for {body['prompt'][:40]!r}")
        group = plan.children.get(index)
        if group:
            await asyncio.gather(*(replay(client, child, check) for child in group))


async def run_spawnjoin(backend: OpenAICompletions, solves: int, budget: Budget, threads: int) -> None:
    results = await asyncio.gather(
        *(spawnjoin.solve(ROOT_PROMPT, backend=backend, dialect="apr", budget=budget) for _ in range(solves))
    )
    for result in results:
        if result.status != "done" or result.metrics.threads != threads:
            raise AssertionError(
                f"solve ended {result.status} with {result.metrics.threads} threads: {result.error}"
            )


async def run_raw(client: openai.AsyncOpenAI, plan: Plan, solves: int, check: bool = False) -> None:
    await asyncio.gather(*(replay(client, plan, check) for _ in range(solves)))


async def timed(work: Awaitable[None]) -> tuple[float, float]:
    """Wall-clock and this process's CPU seconds of `work` (the CPU time excludes the server's)."""
    wall, cpu = time.perf_counter(), time.process_time()
    await work
    return time.perf_counter() - wall, time.process_time() - cpu


async def bench(args: argparse.Namespace, url: str, model: str | None, vllm: bool) -> None:
    script = AprScript(args.width, args.depth, args.words)
    threads = script.threads_per_solve()
    budget = Budget(
        max_tokens_per_call=1024, max_threads=threads, max_children=args.width, max_depth=args.depth
    )
    steer = script if vllm else None
    recorded: dict[str, dict[str, Any]] = {}

    # Recording run: the bodies spawnjoin sends, and the thread tree they form.
    # Generous connect timeouts on both sides: on a shared machine the server may wait long for a CPU, and
    # spawnjoin's /tokenize calls are not retried (a failed one would fail its thread).
    async with ScriptedCompletions(
        url, model, script=steer, record=recorded, connect_timeout=60.0
    ) as recorder:
        result = await spawnjoin.solve(ROOT_PROMPT, backend=recorder, dialect="apr", budget=budget)
    if result.status != "done" or result.metrics.threads != threads:
        raise SystemExit(
            f"the recording solve ended {result.status} ({result.metrics.threads} threads): {result.error}"
        )
    plan = plan_of(result.trace, result.trace.root_id, recorded)
    plan_threads, requests = plan.count()
    if args.no_count_tokens:
        print(
            "spawnjoin runs without /tokenize calls (--no-count-tokens): max_tokens comes from the budget alone"
        )
    print(
        f"workload per round: {args.solves} solve(s) x {plan_threads} threads, {requests} streamed requests and "
        f"{result.metrics.total_tokens} tokens per solve (APR, width {args.width}, depth {args.depth})"
    )

    backend = ScriptedCompletions(
        url, model, script=steer, count=not args.no_count_tokens, connect_timeout=60.0
    )
    client = openai.AsyncOpenAI(
        base_url=backend.base_url, api_key="EMPTY", max_retries=0, timeout=openai.Timeout(600.0, connect=60.0)
    )
    # Warm-ups: connections, model discovery, the server's caches; the raw replay's texts are checked once.
    await run_spawnjoin(backend, args.solves, budget, threads)
    await run_raw(client, plan, args.solves, check=True)
    runs: dict[str, list[tuple[float, float]]] = {"spawnjoin": [], "raw": []}
    for round_ in range(args.repeat):
        order = ("spawnjoin", "raw") if round_ % 2 == 0 else ("raw", "spawnjoin")
        for which in order:
            work = (
                run_spawnjoin(backend, args.solves, budget, threads)
                if which == "spawnjoin"
                else run_raw(client, plan, args.solves)
            )
            runs[which].append(await timed(work))
        (sj_wall, sj_cpu), (raw_wall, raw_cpu) = runs["spawnjoin"][-1], runs["raw"][-1]
        print(
            f"round {round_ + 1}: spawnjoin {sj_wall:.3f} s (CPU {sj_cpu:.2f} s), "
            f"raw openai {raw_wall:.3f} s (CPU {raw_cpu:.2f} s)",
            flush=True,
        )
    await backend.aclose()
    await client.close()
    for kind, index in (("wall", 0), ("client CPU", 1)):
        sj = statistics.median(r[index] for r in runs["spawnjoin"])
        raw = statistics.median(r[index] for r in runs["raw"])
        print(
            f"median {kind}: spawnjoin {sj:.3f} s, raw openai {raw:.3f} s, ratio {sj / raw:.3f} "
            f"({(sj / raw - 1) * 100:+.1f} %)" + ("; target <= +5 %" if index == 0 else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=("auto", "vllm", "toy"), default="auto")
    parser.add_argument("--repeat", type=int, default=5, help="rounds of (spawnjoin, raw), alternating order")
    parser.add_argument(
        "--solves", type=int, help="concurrent solves per round (default: 1 on vLLM, 50 on toy)"
    )
    parser.add_argument("--width", type=int, default=3, help="children per spawn")
    parser.add_argument("--depth", type=int, default=2, help="spawn levels below the root")
    parser.add_argument("--words", type=int, default=12, help="words a leaf thread writes")
    parser.add_argument(
        "--no-count-tokens",
        action="store_true",
        help="spawnjoin without its /tokenize call per request (as against a server that has none)",
    )
    args = parser.parse_args()
    vllm_url = os.environ.get("SPAWNJOIN_VLLM_URL")
    if args.server == "vllm" and not vllm_url:
        raise SystemExit("--server vllm needs $SPAWNJOIN_VLLM_URL (source .ci/vllm.sh)")
    if args.server != "toy" and vllm_url:
        args.solves = args.solves or 1
        print(
            f"server: real vLLM CPU server at {vllm_url} ({os.environ.get('SPAWNJOIN_VLLM_MODEL')}; "
            "structured outputs force the script)"
        )
        asyncio.run(bench(args, vllm_url, os.environ.get("SPAWNJOIN_VLLM_MODEL"), vllm=True))
        return
    args.solves = args.solves or 50
    with ToyServerProcess(args.width, args.depth, args.words) as server:
        print(
            f"server: in-repo toy server (tests/servers FaultServer + AprScript) in a child process at {server.url}"
            + ("" if vllm_url else "; $SPAWNJOIN_VLLM_URL is unset, so not vLLM")
        )
        asyncio.run(bench(args, server.url, None, vllm=False))


if __name__ == "__main__":
    main()
