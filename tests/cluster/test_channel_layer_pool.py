"""Many shopper sockets closing at once on a node with the Redis channel layer.

Every closing socket leaves its channel-layer groups (its cart's, its login state's), one
Redis command each. redis-py's asyncio connection pool holds at most 100 connections and
raises MaxConnectionsError past that: with more than 100 sockets closing together (a
load balancer dropping a node's clients, a browser crash with many tabs, the end of a
load test) the rest failed ("Exception inside application: Too many connections") and left
their group memberships behind in Redis, where every cart message was still sent to them
until the group expired a day later. The pool must wait for a free connection instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.daphne_server import DaphneServer, prepare_database
from tests.live_clients import Tab, Visitor
from tests.redis_server import RedisServer
from tests.tracker.conftest import eventually

pytestmark = pytest.mark.cluster

SHOPPERS, TABS = 8, 25  # 200 sockets: twice the pool's 100 connections


@pytest.fixture
def node(redis_server: RedisServer, tmp_path: Path) -> Iterator[DaphneServer]:
    database = prepare_database(tmp_path / "db.sqlite3")
    server = DaphneServer(database, redis_url=redis_server.url, var_dir=tmp_path / "node")
    try:
        yield server.start()
    finally:
        server.stop()
        print(f"--- node log:\n{server.logs(60)}")


def group_members(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return sum(client.zcard(key) for key in client.scan_iter("asgi:group:*"))
    finally:
        client.close()


async def test_two_hundred_sockets_closing_at_once_all_leave_their_groups(
    node: DaphneServer, redis_server: RedisServer
) -> None:
    shoppers = [Visitor(node.url) for _ in range(SHOPPERS)]
    await asyncio.gather(*(asyncio.to_thread(s.get, "/") for s in shoppers))
    tabs: list[Tab] = []
    for shopper in shoppers:
        tabs += await asyncio.gather(*(shopper.open_tab(node, "/") for _ in range(TABS)))
    assert group_members(redis_server.url) >= SHOPPERS * TABS

    await asyncio.gather(*(tab.abort() for tab in tabs))  # all at once

    def all_left() -> None:
        left = group_members(redis_server.url)
        assert left == 0, f"{left} group memberships of closed sockets left in Redis"

    await eventually(all_left, timeout=30, interval=0.2)
    assert "Too many connections" not in node.logs(2000)
