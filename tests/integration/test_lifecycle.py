"""A server process's life around its tracker replica: what /healthz says of the tracker's
own transport, and clean answers to requests and sockets that arrive during shutdown."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from shop.consumers import SHUTTING_DOWN_CLOSE_CODE
from tests.cluster.tcp_proxy import TcpProxy
from tests.dashboard.conftest import staff_socket_of
from tests.shop.conftest import communicator, session_with_cart
from tests.tracker.conftest import FAST, eventually
from tracker import Tracker
from tracker.process import process_tracker, running_tracker, stop_process_tracker

from .test_observability import get


@pytest.fixture
async def shut_down():
    """This loop's server is shutting down: its tracker has said goodbye for good."""
    await process_tracker()
    await stop_process_tracker(graceful=True, shutdown=True)
    assert running_tracker() is None


@pytest.fixture
async def stops_tracker():
    yield
    await stop_process_tracker(graceful=False)


async def test_healthz_during_shutdown_is_a_clean_503(settings, shut_down):
    settings.REDIS_URL = None
    response = await get("/healthz")
    assert response.status == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["problems"] == ["shutting down"]
    assert body["tracker"]["running"] is False


async def test_a_shopper_socket_during_shutdown_is_closed_cleanly(transactional_db, shut_down):
    from shop.models import Cart

    cart = await Cart.objects.acreate()
    key = await asyncio.to_thread(session_with_cart, cart)
    tab = communicator(key)
    connected, _ = await tab.connect()
    assert connected
    assert (await tab.receive_json_from())["type"] == "cart"  # the page still shows its cart
    assert await tab.receive_output() == {
        "type": "websocket.close",
        "code": SHUTTING_DOWN_CLOSE_CODE,
    }


async def test_a_staff_socket_during_shutdown_is_refused_cleanly(transactional_db, shut_down):
    from django.contrib.auth import get_user_model

    staff = await get_user_model().objects.acreate_user("boss", password="pw", is_staff=True)
    socket = await staff_socket_of(staff)
    connected, _ = await socket.connect()
    assert not connected


async def test_healthz_hears_the_trackers_own_redis_not_only_redis_url(
    settings, redis_server, stops_tracker
):
    """The tracker's pub/sub may live on its own Redis (TRACKER_REDIS_URL): a dead one
    degrades the node even while REDIS_URL answers."""
    proxy = TcpProxy(redis_server.port).start()
    try:
        settings.REDIS_URL = redis_server.url
        settings.TRACKER = {"redis_url": proxy.url, **FAST}
        assert (await get("/healthz")).status == 200
        proxy.cut("reset")
        response = await get("/healthz")
        assert response.status == 503
        problems = response.json()["problems"]
        assert any(p.startswith("tracker Redis does not answer") for p in problems), problems
        assert response.json()["redis"] == {"configured": True, "reachable": True}
    finally:
        proxy.stop()


async def test_healthz_is_degraded_when_the_trackers_reader_is_gone(
    settings, redis_server, stops_tracker
):
    settings.REDIS_URL = redis_server.url
    settings.TRACKER = {"redis_url": redis_server.url, **FAST}
    assert (await get("/healthz")).status == 200
    running_tracker().transport._reader.cancel()  # as if the reader had died
    await asyncio.sleep(0)
    response = await get("/healthz")
    assert response.status == 503
    assert "tracker transport reader not running" in response.json()["problems"]


async def test_healthz_is_degraded_while_an_incompatible_peer_talks(settings, stops_tracker):
    settings.REDIS_URL = None
    settings.TRACKER = {"redis_url": None, **FAST}
    node = await process_tracker()
    other = Tracker(node.name, pool_size=2, **FAST)  # same bus, another shard count
    await other.start()
    try:

        async def degraded() -> None:
            response = await get("/healthz")
            assert response.status == 503
            assert response.json()["problems"] == [
                f"incompatible peer {other.replica_id}: has 2 shards, we have 1"
            ]

        await eventually(degraded)
    finally:
        await other.stop(graceful=False)
    # Once it has been gone for down_period, the node is healthy again.
    await eventually(lambda: node.health()["ok"], timeout=3)


async def test_healthz_keeps_one_redis_connection(settings, redis_server, stops_tracker):
    settings.REDIS_URL = redis_server.url
    settings.TRACKER = {"redis_url": redis_server.url, **FAST}
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        assert (await get("/healthz")).status == 200
        before = (await client.info("stats"))["total_connections_received"]
        for _ in range(20):
            assert (await get("/healthz")).status == 200
        after = (await client.info("stats"))["total_connections_received"]
    finally:
        await client.aclose()
    assert after - before <= 1  # not one per request
