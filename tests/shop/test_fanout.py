"""The node-local fan-out (shop.fanout): the hub's writes to sockets, and the node bus over a
real redis-server, restarts included."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shop.fanout import SLOW_SOCKET_CLOSE_CODE, LocalFanout, NodeBus, publish_to_nodes
from tests.redis_server import RedisServer


class Socket:
    """An ASGI send that records what it is given; `hold()` makes it wait (a client that
    does not read), `fail()` makes it raise (a socket gone)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.failing = False

    def hold(self) -> None:
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    def fail(self) -> None:
        self.failing = True

    async def __call__(self, message: dict[str, Any]) -> None:
        if self.failing:
            raise RuntimeError("Attempt to send on a closed protocol")
        if not self.gate.is_set():
            await self.gate.wait()
        self.received.append(message)

    @property
    def texts(self) -> list[str]:
        return [m["text"] for m in self.received if m["type"] == "websocket.send"]


async def settled() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_frame_reaches_every_socket_of_its_topic_at_once_and_in_order() -> None:
    hub = LocalFanout()
    first, second, elsewhere = Socket(), Socket(), Socket()
    hub.join("stock", first)
    hub.join("stock", second)
    hub.join("product:7", elsewhere)
    assert hub.deliver("stock", "a") == 2
    assert hub.deliver("stock", "b") == 2
    # Written synchronously: no task, nothing scheduled.
    assert first.texts == second.texts == ["a", "b"]
    assert elsewhere.texts == [] and hub.slow == 0
    hub.leave("stock", first)
    hub.deliver("stock", "c")
    assert first.texts == ["a", "b"] and second.texts == ["a", "b", "c"]
    assert hub.count("stock") == 1


async def test_the_greeting_comes_before_anything_delivered_after_the_join() -> None:
    hub = LocalFanout()
    slow = Socket()
    slow.hold()
    hub.join("stock", slow, greeting="levels")
    hub.deliver("stock", "change")
    slow.release()
    await settled()
    assert slow.texts == ["levels", "change"]


async def test_a_slow_socket_does_not_hold_up_the_others_and_keeps_its_order() -> None:
    hub = LocalFanout()
    slow, quick = Socket(), Socket()
    hub.join("stock", slow)
    hub.join("stock", quick)
    slow.hold()
    for text in "abc":
        hub.deliver("stock", text)
    assert quick.texts == ["a", "b", "c"]
    assert slow.texts == [] and hub.slow == 1
    slow.release()
    await settled()
    assert slow.texts == ["a", "b", "c"] and hub.slow == 0
    hub.deliver("stock", "d")  # written at once again
    assert slow.texts == quick.texts == ["a", "b", "c", "d"]


async def test_a_socket_too_far_behind_is_closed_and_the_others_get_everything() -> None:
    hub = LocalFanout(max_backlog=3)
    stuck, quick = Socket(), Socket()
    hub.join("stock", stuck)
    hub.join("stock", quick)
    stuck.hold()
    for index in range(10):
        hub.deliver("stock", str(index))
    stuck.release()
    await settled()
    assert quick.texts == [str(index) for index in range(10)]
    # The send that was under way, then the close instead of what overflowed.
    assert stuck.received == [
        {"type": "websocket.send", "text": "0"},
        {"type": "websocket.close", "code": SLOW_SOCKET_CLOSE_CODE},
    ]


async def test_a_failing_socket_and_one_leaving_while_slow_harm_no_one() -> None:
    hub = LocalFanout()
    gone, leaving, quick = Socket(), Socket(), Socket()
    for socket in (gone, leaving, quick):
        hub.join("stock", socket)
    gone.fail()
    leaving.hold()
    hub.deliver("stock", "a")
    hub.leave("stock", leaving)  # its consumer ended while its send waited
    hub.deliver("stock", "b")
    await settled()
    assert quick.texts == ["a", "b"]
    assert gone.received == [] and leaving.received == []
    assert hub.slow == 0 and hub.count("stock") == 2


async def test_a_slow_socket_keeps_its_backlog_until_it_has_left_its_last_topic() -> None:
    hub = LocalFanout()
    slow = Socket()
    hub.join("stock", slow)
    hub.join("product:7", slow)
    hub.join("product:7", slow)  # (twice in one topic is once)
    slow.hold()
    hub.deliver("stock", "a")
    hub.deliver("product:7", "b")
    hub.leave("product:7", slow)
    hub.leave("product:7", slow)  # (not in it any more: nothing changes)
    assert hub.slow == 1
    slow.release()
    await settled()
    assert slow.texts == ["a", "b"]  # still in the stock topic: its backlog was kept
    slow.hold()
    hub.deliver("stock", "c")
    hub.leave("stock", slow)  # its last topic: what it still had to write is forgotten
    assert hub.slow == 0
    slow.release()
    await settled()
    assert slow.texts == ["a", "b"]


@pytest.fixture
def redis_settings(settings, redis_server: RedisServer) -> RedisServer:
    settings.REDIS_URL = redis_server.url
    return redis_server


async def until(condition, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_one_publish_reaches_every_node_bus_over_redis(redis_settings) -> None:
    heard: dict[str, list[Any]] = {"a": [], "b": []}
    buses = []
    for name in heard:
        bus = NodeBus(redis_settings.url)
        bus.on("stock", heard[name].append)
        bus.start()
        buses.append(bus)
    try:
        await until(lambda: all(bus.subscribed for bus in buses))
        for batch in ([1, 2], [3]):
            await asyncio.to_thread(publish_to_nodes, "stock", batch)
        await until(lambda: heard["a"] == heard["b"] == [[1, 2], [3]])
    finally:
        for bus in buses:
            await bus.close()


async def test_the_node_bus_resubscribes_after_a_redis_restart_and_says_so(
    redis_settings,
) -> None:
    heard: list[Any] = []
    subscriptions: list[float] = []
    bus = NodeBus(redis_settings.url, ping_interval=0.2, stall_timeout=1.0)
    bus.on("stock", heard.append)
    bus.on_subscribed(lambda: subscriptions.append(asyncio.get_running_loop().time()))
    bus.start()
    try:
        await until(lambda: len(subscriptions) == 1)
        redis_settings.kill()
        await until(lambda: not bus.subscribed)
        redis_settings.start()  # the same port
        await until(lambda: len(subscriptions) == 2, within=15)
        await asyncio.to_thread(publish_to_nodes, "stock", [9])
        await until(lambda: heard == [[9]])
    finally:
        await bus.close()


async def test_without_redis_the_buses_of_this_process_hear_every_publish(settings) -> None:
    settings.REDIS_URL = None
    heard: list[Any] = []
    bus = NodeBus(None)
    bus.on("stock", heard.append)
    bus.start()
    try:
        await asyncio.to_thread(publish_to_nodes, "stock", [4])
        publish_to_nodes("stock", [5])  # from the loop's own thread too
        publish_to_nodes("unknown", [6])  # no handler: ignored
        await until(lambda: heard == [[4], [5]])
    finally:
        await bus.close()
    publish_to_nodes("stock", [7])
    await settled()
    assert heard == [[4], [5]]
