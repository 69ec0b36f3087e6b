"""Foreign and broken frames on a live cluster's tracker channels, over a real redis-server:
every bad frame is rejected (counted by reason) before it changes anything, the replicas
keep hearing each other, and they keep converging exactly."""

from __future__ import annotations

import asyncio
from collections import Counter

import msgpack
import redis.asyncio as aioredis

from tracker import wire

from .conftest import Workload, converged, eventually
from .frame_fuzzer import KINDS, FrameFuzzer, capture

SECRET = "fuzz-secret"


async def test_a_frame_of_the_wrong_shape_does_not_silence_a_replica(make_tracker, redis_server):
    """A heartbeat whose "d" was not a map used to end the Redis reader: the node heard
    nothing again, took every peer for down, and /healthz still said ok."""
    a = await make_tracker(redis_url=redis_server.url)
    b = await make_tracker(redis_url=redis_server.url)
    await b.track("c1", "room", "k1", {})
    await eventually(lambda: a.list("room") == [("k1", {})])
    client = aioredis.Redis.from_url(redis_server.url)
    channel = a.transport.broadcast_channels[0]
    bad = {"t": "hb", "r": b.replica_id, "s": 0, "e": 9, "d": [1], "x": []}
    await client.publish(channel, msgpack.packb(bad))  # the old format, the old crash
    await client.publish(channel, wire.MAGIC + bytes((wire.VERSION, 0)) + msgpack.packb(bad))
    await client.aclose()
    await b.track("c2", "room", "k2", {})
    await eventually(lambda: sorted(a.list("room")) == [("k1", {}), ("k2", {})])
    assert a.rejected() == {"version": 1, "invalid": 1}
    health = a.health()
    assert health["transport"]["reader_alive"] and health["receive_errors"] == 0
    # A version 1 frame names its sender: b's id is refused as another protocol version
    # until down_period passes without it, while the real b goes on being heard.
    assert a.incompatible_peers() == {b.replica_id: "speaks tracker protocol 1, we speak 2"}


async def test_thousands_of_foreign_frames_leave_the_cluster_converging(make_tracker, redis_server):
    url = redis_server.url
    a = await make_tracker(redis_url=url, secret=SECRET)
    b = await make_tracker(redis_url=url, secret=SECRET)
    trackers = [a, b]
    channels = [*a.transport.broadcast_channels, *a.transport.direct_channels]
    channels += b.transport.direct_channels
    work = Workload(trackers, seed=4)
    genuine = await capture(url, channels, work.run(60, pause=0.01))
    await converged(trackers, work.topics, work.rows)
    fuzzer = FrameFuzzer(genuine, SECRET, seed=7)

    # While the workload goes on, every kind of frame on every tracker channel.
    client = aioredis.Redis.from_url(url)
    expected = {t.replica_id: Counter() for t in trackers}
    sent = Counter()
    receivers = {
        a.transport.broadcast_channels[0]: trackers,
        a.transport.direct_channels[0]: [a],
        b.transport.direct_channels[0]: [b],
    }
    before = {t.replica_id: Counter(t.rejected()) for t in trackers}

    async def fuzz() -> None:
        for i in range(3000):
            kind = KINDS[i % len(KINDS)]
            frame = fuzzer.frame(kind)
            channel = list(receivers)[i % 3]
            await client.publish(channel, frame)
            sent[kind] += 1
            reason = fuzzer.expected_reason(kind, frame)
            if reason is not None:
                for t in receivers[channel]:
                    expected[t.replica_id][reason] += 1
            if i % 50 == 0:
                await asyncio.sleep(0)

    await asyncio.gather(fuzz(), Workload(trackers, seed=5, model=work).run(150, pause=0.01))
    await client.aclose()
    await converged(trackers, work.topics, work.rows, timeout=10)

    for t in trackers:

        def counted(t=t) -> bool:
            return Counter(t.rejected()) - before[t.replica_id] == expected[t.replica_id]

        await eventually(counted, timeout=5)
        health = t.health()
        assert health["receive_errors"] == 0 and health["transport"]["reader_alive"]
        assert t.replicas() == {a.replica_id: "up", b.replica_id: "up"}
    assert sum(sent.values()) == 3000 and set(sent) == set(KINDS)
    # Still converging after the storm: new changes reach the other replica.
    await Workload(trackers, seed=6, model=work).run(30)
    await converged(trackers, work.topics, work.rows)
