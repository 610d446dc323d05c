"""Fault scenarios shared by the fault tests and `benchmarks/faults.py`.

Each scenario queues faults on a test server, streams one greedy request through a backend and compares the
text with an undisturbed run, token by token.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from spawnjoin._exceptions import BackendError
from spawnjoin.backends.base import Backend
from tests.servers.fault_openai import Fault
from tests.servers.helpers import collect, make_request
from tests.servers.toy_model import tokenize

SCENARIOS: dict[str, list[Fault]] = {
    "undisturbed": [],
    "drop mid-stream": [Fault("drop", after=7)],
    "clean EOF mid-stream": [Fault("truncate", after=11)],
    "drop twice": [Fault("drop", after=3), Fault("drop", after=5)],
    "stall": [Fault("stall", after=5, seconds=1.0)],
    "429 + Retry-After": [Fault("status", status=429, retry_after="0.05")],
    "500": [Fault("status", status=500)],
    "503 then drop": [Fault("status", status=503), Fault("drop", after=9)],
    "garbage SSE": [Fault("garbage", after=6)],
    "connection refused then up": [],  # handled by `refused_then_up`
}
OPENAI_ONLY = {"error event": [Fault("error_event", after=4)]}


@dataclass
class Outcome:
    """One run's comparison with the undisturbed text."""

    same_text: bool
    lost: int
    duplicated: int
    error: str | None = None


def compare(expected: str, got: str) -> Outcome:
    """Tokens of `expected` missing from `got`, and tokens of `got` that are not in `expected`."""
    want, have = tokenize(expected), tokenize(got)
    common = 0
    for a, b in zip(want, have, strict=False):
        if a != b:
            break
        common += 1
    return Outcome(expected == got, len(want) - common, len(have) - common)


@contextlib.contextmanager
def refused_then_up(server, after: float = 0.15) -> Iterator[None]:
    """Stop `server` now (connections are refused) and start it again on the same port after `after` s."""
    server.stop()
    timer = threading.Timer(after, server.start)
    timer.start()
    try:
        yield
    finally:
        timer.join()


async def run_scenario(
    name: str, server, backend: Backend, expected: str, *, prompt: str = "Once upon", max_tokens: int = 40
) -> Outcome:
    """Run scenario `name` once against `server` through `backend`."""
    faults = {**SCENARIOS, **OPENAI_ONLY}[name]
    server.faults.extend(faults)
    cm: contextlib.AbstractContextManager[None] = (
        refused_then_up(server) if name == "connection refused then up" else contextlib.nullcontext()
    )
    with cm:
        try:
            got = await collect(backend, make_request(prompt, max_tokens=max_tokens))
        except BackendError as exc:
            server.faults.clear()
            return Outcome(False, 0, 0, f"{type(exc).__name__}: {exc}")
    return compare(expected, got.text)


BackendFactory = Callable[[str], Backend]
