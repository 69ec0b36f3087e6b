"""The embedded default's channel layer (shop.channel_layer.LocalChannelLayer): channels'
in-memory layer, swept for expired messages and memberships at most once per interval."""

import asyncio

from channels.layers import get_channel_layer

from shop.channel_layer import LocalChannelLayer


def test_it_is_the_layer_of_the_embedded_default(settings):
    assert settings.REDIS_URL is None
    assert isinstance(get_channel_layer(), LocalChannelLayer)


async def test_a_group_send_reaches_every_member_past_a_full_one():
    layer = LocalChannelLayer(capacity=1)
    names = [await layer.new_channel() for _ in range(3)]
    for name in names:
        await layer.group_add("g", name)
    await layer.send(names[1], {"type": "filler"})  # names[1] is full
    await layer.group_send("g", {"type": "hello", "n": 1})
    assert await layer.receive(names[0]) == {"type": "hello", "n": 1}
    assert await layer.receive(names[1]) == {"type": "filler"}
    assert await layer.receive(names[2]) == {"type": "hello", "n": 1}


async def test_expired_messages_and_memberships_go_at_the_next_sweep():
    """A channel with an expired message leaves every group (as in InMemoryChannelLayer),
    at the first sweep after the message expired, not before."""
    layer = LocalChannelLayer(expiry=0.05, sweep_interval=0.2)
    idle, reader = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("g", idle)
    await layer.group_add("g", reader)
    await layer.group_send("g", {"type": "first"})  # the first call sweeps (nothing yet)
    assert (await layer.receive(reader))["type"] == "first"
    await asyncio.sleep(0.1)  # idle's message is past its expiry now
    await layer.group_send("g", {"type": "second"})  # within the interval: no sweep
    assert set(layer.groups["g"]) == {idle, reader}
    assert (await layer.receive(reader))["type"] == "second"
    await asyncio.sleep(0.2)
    await layer.group_send("g", {"type": "third"})  # swept first: idle is out
    assert set(layer.groups["g"]) == {reader}
    assert (await layer.receive(reader))["type"] == "third"
    assert idle not in layer.channels  # its expired messages are gone
