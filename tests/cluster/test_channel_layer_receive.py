"""The channel layer (shop/channel_layer.py) against a real redis-server: one reader per
process hands each message to its channel's inbox; group_add in one round trip."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from shop.channel_layer import WaitingRedisChannelLayer
from tests.redis_server import RedisServer

pytestmark = pytest.mark.cluster


@pytest.fixture
async def layer(redis_server: RedisServer) -> AsyncIterator[WaitingRedisChannelLayer]:
    layer = WaitingRedisChannelLayer(hosts=[{"address": redis_server.url}])
    try:
        yield layer
    finally:
        await layer.flush()
        await layer.close_pools()


async def test_every_channel_gets_its_own_messages_in_order(layer) -> None:
    channels = [await layer.new_channel() for _ in range(50)]
    received: dict[str, list[int]] = {channel: [] for channel in channels}

    async def consume(channel: str) -> None:
        while len(received[channel]) < 3:
            received[channel].append((await layer.receive(channel))["n"])

    consumers = [asyncio.create_task(consume(channel)) for channel in channels]
    await asyncio.sleep(0.1)
    for n in range(3):
        for channel in channels:
            await layer.send(channel, {"type": "test.message", "n": n})
    await asyncio.wait_for(asyncio.gather(*consumers), 10)

    assert received == {channel: [0, 1, 2] for channel in channels}


async def test_a_group_message_reaches_every_member_once(layer) -> None:
    channels = [await layer.new_channel() for _ in range(5)]
    for channel in channels:
        await layer.group_add("cart", channel)
    waiting = [asyncio.create_task(layer.receive(channel)) for channel in channels]
    await layer.group_send("cart", {"type": "cart.changed", "rev": 7})

    messages = await asyncio.wait_for(asyncio.gather(*waiting), 10)

    assert messages == [{"type": "cart.changed", "rev": 7}] * 5


async def test_a_group_add_adds_the_channel_and_sets_the_groups_expiry(layer, redis_server) -> None:
    channel = await layer.new_channel()
    await layer.group_add("cart", channel)

    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        key = layer._group_key("cart")
        assert await client.zrange(key, 0, -1) == [channel.encode()]
        assert 0 < await client.ttl(key) <= layer.group_expiry
    finally:
        await client.aclose()


async def test_a_message_for_a_busy_receiver_waits_for_it(layer) -> None:
    busy, other = await layer.new_channel(), await layer.new_channel()
    waiting = asyncio.create_task(layer.receive(other))  # keeps the reader reading
    await asyncio.sleep(0.1)
    await layer.send(busy, {"type": "first"})
    await layer.send(busy, {"type": "second"})
    await layer.send(other, {"type": "for other"})
    assert (await asyncio.wait_for(waiting, 10))["type"] == "for other"

    assert (await asyncio.wait_for(layer.receive(busy), 10))["type"] == "first"
    assert (await asyncio.wait_for(layer.receive(busy), 10))["type"] == "second"


async def test_a_waiting_receiver_holds_a_future_and_nothing_else(layer) -> None:
    channels = [await layer.new_channel() for _ in range(20)]
    waiting = [asyncio.create_task(layer.receive(channel)) for channel in channels]
    await asyncio.sleep(0.1)

    inboxes = [layer._inboxes[channel] for channel in channels]
    assert all(inbox.messages is None and inbox.waiter is not None for inbox in inboxes)
    assert not layer.receive_buffer  # channels-redis's per-channel queues are not used
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


async def test_an_ended_receiver_leaves_nothing_and_the_reader_stops(layer) -> None:
    channels = [await layer.new_channel() for _ in range(3)]
    waiting = [asyncio.create_task(layer.receive(channel)) for channel in channels]
    await asyncio.sleep(0.1)
    reader = layer._reader
    assert reader is not None

    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    await asyncio.sleep(0)

    assert layer._inboxes == {}
    assert reader.done() and layer._reader is None


async def test_a_receiver_arriving_as_the_last_one_leaves_still_gets_its_messages(layer) -> None:
    leaving, arriving = await layer.new_channel(), await layer.new_channel()
    waiting = asyncio.create_task(layer.receive(leaving))
    await asyncio.sleep(0.1)
    waiting.cancel()  # its cancellation stops the reader, which ends one step later:
    receiving = asyncio.create_task(layer.receive(arriving))  # this starts in between
    await asyncio.sleep(0.1)

    await layer.send(arriving, {"type": "hello"})

    assert (await asyncio.wait_for(receiving, 10))["type"] == "hello"


async def test_a_lost_redis_fails_every_waiting_receiver(redis_server: RedisServer) -> None:
    layer = WaitingRedisChannelLayer(hosts=[{"address": redis_server.url, "socket_timeout": 2}])
    try:
        channels = [await layer.new_channel() for _ in range(3)]
        waiting = [asyncio.create_task(layer.receive(channel)) for channel in channels]
        await asyncio.sleep(0.2)
        redis_server.kill()

        results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 15)

        assert all(isinstance(result, Exception) for result in results), results
        assert layer._inboxes == {}
    finally:
        await layer.close_pools()
