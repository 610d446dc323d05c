"""Several endpoints: least outstanding, affinity, dead endpoints skipped, streams resumed elsewhere."""

from __future__ import annotations

import asyncio

import pytest

from spawnjoin._exceptions import ConnectError, ServerError
from spawnjoin.backends._retry import RetryPolicy
from spawnjoin.backends.multi import MultiBackend
from spawnjoin.backends.openai import OpenAICompletions
from spawnjoin.backends.scripted import ScriptedBackend
from tests.servers import Fault, FaultServer
from tests.servers.helpers import collect, make_request
from tests.servers.scenarios import compare

FAST = RetryPolicy(initial_delay=0.01, max_delay=0.05, max_retries=4)


def tagged(tag: str, **kwargs) -> ScriptedBackend:
    return ScriptedBackend(lambda r: [tag] * 3, **kwargs)


async def test_least_outstanding_spreads_concurrent_requests() -> None:
    backends = [tagged(t, delay=0.01) for t in "abc"]
    multi = MultiBackend(backends, retry=FAST)
    results = await asyncio.gather(*(collect(multi, make_request(str(i))) for i in range(6)))
    assert sorted(r.text for r in results) == ["aaa", "aaa", "bbb", "bbb", "ccc", "ccc"]
    assert [s.served for s in multi.statistics()] == [2, 2, 2]
    assert all(s.in_flight == 0 for s in multi.statistics())


async def test_affinity_keeps_a_key_on_one_endpoint() -> None:
    multi = MultiBackend([tagged("a"), tagged("b")], retry=FAST)
    texts = [(await collect(multi, make_request(affinity="thread-7"))).text for _ in range(5)]
    assert len(set(texts)) == 1
    # A new key goes to the least busy endpoint (here: the other one, by rotation), then sticks.
    other = (await collect(multi, make_request(affinity="thread-8"))).text
    assert {(await collect(multi, make_request(affinity="thread-8"))).text for _ in range(3)} == {other}


async def test_dead_endpoint_is_marked_down_and_skipped() -> None:
    calls: list[int] = []

    def dead(request):
        calls.append(1)
        return ConnectError("refused")

    now = [0.0]
    multi = MultiBackend([ScriptedBackend(dead), tagged("b")], retry=FAST, down_for=30, clock=lambda: now[0])
    for _ in range(4):
        assert (await collect(multi, make_request(affinity="x"))).text == "bbb"
    assert len(calls) <= 1  # tried at most once, then skipped while down
    assert multi.statistics()[0].down
    now[0] = 31.0  # after down_for it is tried again
    await collect(multi, make_request())
    await collect(multi, make_request())
    assert len(calls) == 2


async def test_all_down_raises_after_retries() -> None:
    multi = MultiBackend([ScriptedBackend(lambda r: ConnectError("no")) for _ in range(2)], retry=FAST)
    with pytest.raises(ConnectError):
        await collect(multi, make_request())


async def test_real_servers_one_dead_one_flaky_no_token_lost() -> None:
    with FaultServer() as good, FaultServer() as flaky:
        dead_url = "http://127.0.0.1:9/v1"
        multi = MultiBackend.from_urls(
            [dead_url, flaky.url + "/v1", good.url + "/v1"], retry=FAST, read_timeout=5.0
        )
        reference = OpenAICompletions(good.url, retry=FAST)
        expected = (await collect(reference, make_request("Once upon", max_tokens=30))).text
        flaky.faults.extend([Fault("drop", after=4), Fault("status", status=500), Fault("drop", after=2)])
        results = await asyncio.gather(
            *(collect(multi, make_request("Once upon", max_tokens=30, affinity=f"t{i}")) for i in range(6))
        )
        for got in results:
            outcome = compare(expected, got.text)
            assert outcome.same_text and outcome.lost == 0 and outcome.duplicated == 0
            assert got.finish.completion_tokens == 30
        stats = multi.statistics()
        assert stats[0].down and stats[0].served == 0
        await multi.aclose()


async def test_non_connect_errors_are_not_failover() -> None:
    multi = MultiBackend(
        [ScriptedBackend(lambda r: ServerError("x", retryable=False)), tagged("b")], retry=FAST
    )
    with pytest.raises(ServerError):
        await collect(multi, make_request(affinity="k"))
