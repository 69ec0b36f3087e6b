"""A tracker's Redis connections dropped without a word (a NAT or firewall forgetting them,
no reset) are noticed and replaced within the down period: the replica never goes deaf."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.cluster.tcp_proxy import BLACKHOLE, TcpProxy

from .conftest import Workload, converged, eventually

TIMINGS = {
    "broadcast_period": 0.05,
    "max_silent_periods": 2,  # a heartbeat, heard back by its sender, every 0.1 s at least
    "down_period": 1.0,
    "permdown_period": 30.0,
}


@pytest.fixture
def proxy(redis_server) -> Iterator[TcpProxy]:
    proxy = TcpProxy(redis_server.port).start()
    try:
        yield proxy
    finally:
        proxy.stop()


async def two_nodes(make_tracker, redis_server, proxy):
    """a talks to Redis through the proxy, b directly; both hold rows and see each other."""
    a = await make_tracker(redis_url=proxy.url, **TIMINGS)
    b = await make_tracker(redis_url=redis_server.url, **TIMINGS)
    work = Workload([a, b], seed=3)
    await work.run(40, pause=0.005)
    await converged([a, b], work.topics, work.rows)
    return a, b, work


async def test_connections_dropped_silently_are_replaced_before_peers_look_down(
    make_tracker, redis_server, proxy
):
    a, b, work = await two_nodes(make_tracker, redis_server, proxy)
    statuses: set[str] = set()

    async def watch() -> None:
        while True:
            statuses.update(b.replicas().values())
            statuses.update(a.replicas().values())
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    proxy.drop_silently()  # every open connection of a is now dead; new ones work
    await Workload([a, b], seed=4, model=work).run(40, pause=0.01)
    await converged([a, b], work.topics, work.rows, timeout=TIMINGS["down_period"])
    watcher.cancel()
    assert statuses == {"up"}  # nobody was taken for down on the way
    assert a.transport.health()["stalls"] >= 1  # noticed by the silence, then replaced
    assert a.health()["ok"] and a.transport.reconnects >= 1


async def test_a_blackhole_longer_than_down_period_heals_within_down_period(
    make_tracker, redis_server, proxy
):
    a, b, work = await two_nodes(make_tracker, redis_server, proxy)
    proxy.cut(BLACKHOLE)
    await eventually(lambda: b.replicas()[a.replica_id] == "down", timeout=3)
    await eventually(lambda: a.replicas()[b.replica_id] == "down", timeout=3)
    await Workload([a, b], seed=5, model=work).run(40, pause=0.01)
    await asyncio.sleep(2 * TIMINGS["down_period"])
    assert not a.health()["ok"]  # it says it cannot hear its transport
    proxy.heal()
    await converged([a, b], work.topics, work.rows, timeout=TIMINGS["down_period"])
    assert a.replicas() == b.replicas() == {a.replica_id: "up", b.replica_id: "up"}
    await eventually(lambda: a.health()["ok"], timeout=1)
