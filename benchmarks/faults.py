"""Fault-injection report: every scenario, several runs, tokens lost or duplicated.

Streams greedy requests through `OpenAICompletions` and `SGLangBackend` against the real HTTP test servers of
``tests/servers`` (127.0.0.1) while they drop streams, stall, answer 429/500/503, send garbage SSE or refuse
connections, and compares each result with an undisturbed run token by token. Run from the repository root::

    python benchmarks/faults.py [--runs 5] [--tokens 40]

Exits non-zero if any token was lost or duplicated, or any run ended in an error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spawnjoin._exceptions import BackendError  # noqa: E402
from spawnjoin.backends._retry import RetryPolicy  # noqa: E402
from spawnjoin.backends.openai import OpenAICompletions  # noqa: E402
from spawnjoin.backends.sglang import SGLangBackend  # noqa: E402
from tests.servers import Fault, FaultServer, SGLangServer  # noqa: E402
from tests.servers.helpers import collect, make_request  # noqa: E402
from tests.servers.scenarios import OPENAI_ONLY, SCENARIOS, Outcome, run_scenario  # noqa: E402

RETRY = RetryPolicy(initial_delay=0.05, max_delay=0.2, max_retries=5)


async def bench(kind: str, runs: int, tokens: int) -> list[tuple[str, list[Outcome], float]]:
    server = FaultServer() if kind == "openai" else SGLangServer()
    names = [*SCENARIOS, *OPENAI_ONLY] if kind == "openai" else list(SCENARIOS)
    rows = []
    with server:
        if kind == "openai":
            backend = OpenAICompletions(server.url + "/v1", retry=RETRY, read_timeout=0.3)
        else:
            backend = SGLangBackend(server.url, retry=RETRY, read_timeout=0.3)
        for name in names:
            outcomes = []
            start = time.perf_counter()
            for run in range(runs):
                prompt = f"Run {run} of {name}"
                expected = (await collect(backend, make_request(prompt, max_tokens=tokens))).text
                outcomes.append(
                    await run_scenario(name, server, backend, expected, prompt=prompt, max_tokens=tokens)
                )
            rows.append((name, outcomes, time.perf_counter() - start))
        # Past the retry budget the request must fail with a clear error, not hang or return partial text.
        server.faults.extend(Fault("status", status=500) for _ in range(RETRY.max_retries + 1))
        try:
            await collect(backend, make_request("doomed", max_tokens=tokens))
            exhausted = "no error (wrong)"
        except BackendError as exc:
            exhausted = f"{type(exc).__name__} after {getattr(exc, 'attempts', '?')} attempts: {exc}"
        server.faults.clear()
        rows.append(("500 forever", [Outcome(True, 0, 0, exhausted)], 0.0))
        await backend.aclose()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per scenario (default 5)")
    parser.add_argument("--tokens", type=int, default=40, help="max_tokens per request (default 40)")
    args = parser.parse_args()
    bad = 0
    total_runs = total_lost = total_dup = total_scenarios = 0
    for kind in ("openai", "sglang"):
        rows = asyncio.run(bench(kind, args.runs, args.tokens))
        print(
            f"\n{kind} backend ({'fault-injecting completions server' if kind == 'openai' else '/generate server'})"
        )
        print(
            f"{'scenario':<30} {'runs':>5} {'same text':>10} {'lost':>6} {'dup':>5} {'errors':>7} {'seconds':>8}"
        )
        for name, outcomes, seconds in rows:
            if name == "500 forever":
                error = outcomes[0].error or ""
                print(f"{'500 forever (retries exhausted)':<30} -> {error}")
                bad += "attempts" not in error
                continue
            same = sum(o.same_text for o in outcomes)
            lost = sum(o.lost for o in outcomes)
            dup = sum(o.duplicated for o in outcomes)
            errors = sum(o.error is not None for o in outcomes)
            print(f"{name:<30} {len(outcomes):>5} {same:>10} {lost:>6} {dup:>5} {errors:>7} {seconds:>8.2f}")
            bad += (same != len(outcomes)) + lost + dup + errors
            total_runs += len(outcomes)
            total_lost += lost
            total_dup += dup
            total_scenarios += 1
    print(
        f"\nscenarios: {total_scenarios}  runs: {total_runs}  tokens lost: {total_lost}  tokens duplicated: {total_dup}"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
