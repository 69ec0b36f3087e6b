"""The tracker under stress tells the truth: one regression test per way it used to lie.

Each of these failed before its fix (issue 9): a leave lost when a peer came back within one
loop iteration, a restarted node ignored for ever because its host clock was behind, two
versions of one presence shown at once after a lost update, replicas of different shard
counts half-understanding each other, and a frame of the wrong shape silencing a node.
"""

from __future__ import annotations

import asyncio
import time
from unittest import mock

import msgpack
import pytest

from tests.virtual_time import VirtualTimeLoop
from tracker import LocalBus, Tracker, wire
from tracker.deltas import Delta
from tracker.state import State

from .conftest import FAST, Replay, eventually, visible_refs
from .test_runtime_properties import HeldBus, run_now


def test_a_leave_while_a_down_peer_comes_back_reaches_subscribers():
    """A peer is found down (leaves pending) and, before the diff goes out, its heartbeat
    brings it back and removes one of its rows: subscribers must hear that row leave."""
    loop = VirtualTimeLoop()
    bus = HeldBus()
    bus.hold = False
    a = Tracker("t", bus=bus, **FAST)
    b = Tracker("t", bus=bus, **FAST)
    loop.run_until_complete(a.start())
    loop.run_until_complete(b.start())
    replay = Replay()
    a.subscribe(replay)

    async def track() -> None:
        await b.track("c1", "room", "k1", {})
        await b.track("c2", "room", "k2", {})

    loop.run_until_complete(track())
    loop.run_for(0.3)
    assert sorted(key for key, _ in a.list("room")) == ["k1", "k2"]
    bus.hold = True

    def untrack() -> None:
        run_now(b.untrack("c1", "room", "k1"))
        b.shards[0].flush()  # the heartbeat that carries the removal, held on the bus

    loop.call_soon(untrack)
    loop.settle()
    from_b = [
        f for f in bus.in_flight if f.sender == b.replica_id and f.receiver.replica == a.replica_id
    ]
    assert from_b

    def one_iteration() -> None:
        loop.jump(FAST["down_period"] + 0.1)  # a's process was frozen meanwhile
        a.shards[0].tick()  # b is silent past down_period: down, its rows leave
        for flight in from_b:  # ...and its heartbeat arrives in the same iteration
            flight.receiver._arrive(flight.shard, flight.payload)

    loop.call_soon(one_iteration)
    loop.settle()
    assert a.list("room") == [("k2", {})]
    assert replay.problems == []
    assert replay.visible == visible_refs(a, ["room"])  # k1 reported gone, k2 still there
    for t in (a, b):
        loop.run_until_complete(t.stop(graceful=False))
    loop.close()


async def test_a_restarted_node_whose_clock_is_behind_replaces_its_predecessor(make_tracker):
    bus = LocalBus()
    a = await make_tracker(bus=bus)
    old = await make_tracker(bus=bus, node_name="node-b")
    await old.track("c-old", "room", "old", {})
    await eventually(lambda: a.list("room") == [("old", {})])
    await old.stop(graceful=False)  # a crash, then a restart on a host clock an hour behind
    with mock.patch("time.time", return_value=time.time() - 3600):
        new = await make_tracker(bus=bus, node_name="node-b")
    await new.track("c-new", "room", "new", {})
    took = await eventually(lambda: a.list("room") == [("new", {})], timeout=5)
    assert took < FAST["down_period"]  # at once, not by down detection
    assert a.replicas() == {a.replica_id: "up", new.replica_id: "up"}


async def test_a_predecessor_that_keeps_talking_steps_aside_for_good(make_tracker):
    bus = LocalBus()
    a = await make_tracker(bus=bus)
    old = await make_tracker(bus=bus, node_name="node-b")
    await old.track("c-old", "room", "old", {})
    await asyncio.sleep(0.05)
    new = await make_tracker(bus=bus, node_name="node-b")
    await new.track("c-new", "room", "new", {})
    await eventually(lambda: old.superseded_by == new.replica_id)
    assert new.superseded_by is None
    await eventually(lambda: a.list("room") == [("new", {})])
    await old.track("c-late", "room", "late", {})  # still running: never shown again
    await asyncio.sleep(4 * FAST["down_period"])
    assert a.list("room") == [("new", {})]
    assert a.replicas() == {a.replica_id: "up", new.replica_id: "up"}
    assert old.health()["ok"] is False
    assert any("superseded" in problem for problem in old.health()["problems"])


def test_the_newer_version_of_a_row_hides_the_older_after_a_lost_update():
    owner, peer = State("a"), State("b")
    owner.join("conn", "t", "k", {"v": 1})
    peer.merge(owner.take_delta())
    owner.update("conn", "t", "k", {"v": 2})
    owner.take_delta()  # lost on the way to the peer: it held the removal of v1
    owner.update("conn", "t", "k", {"v": 3})
    joins, leaves = peer.merge(owner.take_delta())
    assert peer.get_by_key("t", "k") == [("conn", {"v": 3})]
    assert [r.meta for r in joins] == [{"v": 3}] and [r.meta for r in leaves] == [{"v": 1}]
    # The lost delta arriving late changes nothing: its removal and its row are history.
    assert peer.behind("a")
    peer.merge(owner.extract(peer.context()["a"]))
    assert peer.get_by_key("t", "k") == [("conn", {"v": 3})]


def test_a_late_older_version_never_shows_beside_the_newer():
    owner, peer = State("a"), State("b")
    owner.join("conn", "t", "k", {"v": 1})
    first = owner.take_delta()  # delayed
    owner.update("conn", "t", "k", {"v": 2})
    owner.take_delta()  # lost: it held the removal of v1
    owner.update("conn", "t", "k", {"v": 3})
    peer.merge(owner.take_delta())  # v3 arrives first
    assert peer.get_by_key("t", "k") == [("conn", {"v": 3})]
    joins, leaves = peer.merge(first)  # then v1, whose removal is implied by v3
    assert peer.get_by_key("t", "k") == [("conn", {"v": 3})]
    assert joins == leaves == []


def test_two_versions_of_one_row_never_both_visible_under_loss():
    """At most one visible row per (owner, topic, conn, key), whatever is lost."""
    owner, peer = State("a"), State("b")
    owner.join("conn", "t", "k", {"v": 0})
    peer.merge(owner.take_delta())
    for v in range(1, 200):
        owner.update("conn", "t", "k", {"v": v})
        delta = owner.take_delta()
        if v % 3:  # two of three heartbeats lost
            continue
        peer.merge(delta)
        assert len(peer.get_by_key("t", "k")) == 1, v


async def test_replicas_with_different_shard_counts_refuse_each_other(make_tracker):
    bus = LocalBus()
    one = await make_tracker(bus=bus)
    three = await make_tracker(bus=bus, pool_size=3)
    await one.track("c1", "room", "k1", {})
    await three.track("c3", "room", "k3", {})
    await eventually(lambda: bool(one.incompatible_peers() and three.incompatible_peers()))
    assert one.incompatible_peers() == {three.replica_id: "has 3 shards, we have 1"}
    assert three.incompatible_peers() == {one.replica_id: "has 1 shards, we have 3"}
    await asyncio.sleep(3 * FAST["broadcast_period"])
    assert one.replicas() == {one.replica_id: "up"}
    assert one.list("room") == [("k1", {})]
    assert three.list("room") == [("k3", {})]
    health = one.health()
    assert health["ok"] is False and health["rejected"]["incompatible"] > 0
    assert "incompatible peer" in health["problems"][0]


def test_frames_of_every_wrong_shape_are_rejected_by_reason():
    codec = wire.Codec()
    good = codec.encode_delta(wire.HEARTBEAT, Delta("n:1", 0, 0), age=1.0, shards=1)
    assert isinstance(codec.decode(good), wire.DeltaMessage)
    header = good[:5]

    def frame(body) -> bytes:
        return header + msgpack.packb(body)

    base = {"t": "hb", "r": "n:1", "s": 0, "e": 2, "d": {}, "x": [], "a": 1.0, "n": 1}
    cases = {
        wire.MALFORMED: [b"", b"junk", b"TRK", header + b"\xc1", frame([1, 2])],
        wire.VERSION_MISMATCH: [
            b"TRK\x01\x00" + msgpack.packb(base),
            msgpack.packb({"t": "hb", "r": "old:1", "s": 0, "e": 0, "d": [1], "x": []}),
        ],
        wire.INVALID: [
            frame({**base, "d": [1]}),  # the frame that silenced a node
            frame({**base, "d": {"t": [[1, "c", "k"]]}}),
            frame({**base, "d": {"t": [[3, "c", "k", {}]]}}),  # dot outside (s, e]
            frame({**base, "d": {"t": [[1, "c", "k", {}], [1, "c2", "k", {}]]}}),
            frame({**base, "d": {"t": [[1, 5, "k", {}]]}}),
            frame({**base, "d": {"t": [[1, "c", "k", []]]}}),
            frame({**base, "x": [1]}),  # removed above start
            frame({**base, "x": "1"}),
            frame({**base, "s": 3}),
            frame({**base, "e": -1}),
            frame({**base, "e": 2**63}),
            frame({**base, "a": "old"}),
            frame({**base, "a": float("nan")}),
            frame({**base, "n": 0}),
            frame({**base, "o": 7}),
            frame({**base, "r": 42}),
            frame({**base, "r": "no-colon"}),
            frame({**base, "t": "??"}),
            frame({"t": "tq", "r": "n:1", "s": -1}),
            frame({k: v for k, v in base.items() if k != "e"}),
        ],
    }
    for reason, frames in cases.items():
        for payload in frames:
            with pytest.raises(wire.Rejected) as rejected:
                codec.decode(payload)
            assert rejected.value.reason == reason, (payload, rejected.value.detail)


def test_signed_frames_need_the_same_secret():
    ours, theirs, unsigned = wire.Codec("s3cret"), wire.Codec("other"), wire.Codec()
    frame = ours.encode_goodbye("n:1")
    assert ours.decode(frame) == wire.Goodbye("n:1")
    for codec, payload in (
        (theirs, frame),
        (unsigned, frame),
        (ours, unsigned.encode_goodbye("n:1")),
    ):
        with pytest.raises(wire.Rejected) as rejected:
            codec.decode(payload)
        assert rejected.value.reason == wire.SIGNATURE
    tampered = bytearray(frame)
    tampered[-1] ^= 1
    with pytest.raises(wire.Rejected, match="bad signature"):
        ours.decode(bytes(tampered))


async def test_a_bad_frame_changes_nothing_and_the_replica_keeps_hearing(make_tracker):
    bus = LocalBus()
    a = await make_tracker(bus=bus)
    b = await make_tracker(bus=bus)
    await b.track("c1", "room", "k1", {})
    await eventually(lambda: a.list("room") == [("k1", {})])
    transport = a.transport
    before = a.status()["shards"][0]["clock"], a.list("room")
    bad = (
        wire.MAGIC
        + bytes((wire.VERSION, 0))
        + msgpack.packb(
            {"t": "hb", "r": b.replica_id, "s": 0, "e": 9, "d": [1], "x": [], "a": 1.0, "n": 1}
        )
    )
    for _ in range(300):
        transport.deliver(0, bad, 0.0)
        transport.deliver(0, b"\x00garbage", 0.0)
    await asyncio.sleep(0.05)
    assert (a.status()["shards"][0]["clock"], a.list("room")) == before
    assert a.rejected() == {"invalid": 300, "malformed": 300}
    await b.track("c2", "room", "k2", {})
    await eventually(lambda: sorted(a.list("room")) == [("k1", {}), ("k2", {})])
    assert a.health()["ok"]
