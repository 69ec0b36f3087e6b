"""Many replicas in one event loop over the in-process bus, with injected faults: loss,
duplication, reordering, partitions, crashes, graceful stops and replaced nodes."""

from __future__ import annotations

import asyncio

from tracker import LocalBus

from .conftest import (
    FAST,
    Recorder,
    Replay,
    Workload,
    converged,
    eventually,
    refs,
    start_cluster,
    visible_refs,
)


async def test_thirty_percent_loss_converges_through_transfers(make_tracker):
    bus = LocalBus(loss=0.3, seed=7)
    trackers = await start_cluster(make_tracker, 5, bus=bus)
    replays = [Replay() for _ in trackers]
    for t, replay in zip(trackers, replays, strict=True):
        t.subscribe(replay)
    work = Workload(trackers, seed=1)
    await work.run(300)
    await converged(trackers, work.topics, work.rows, timeout=10)

    # The losses were repaired by transfers, not by luck.
    assert sum(s["stats"]["transfers_received"] for t in trackers for s in t.status()["shards"])
    for t, replay in zip(trackers, replays, strict=True):
        assert replay.problems == []
        await eventually(
            lambda t=t, replay=replay: replay.visible == visible_refs(t, work.topics), timeout=0.5
        )


async def test_duplication_and_reordering_converge(make_tracker):
    bus = LocalBus(duplicate=0.3, delay=(0.0, 0.12), seed=11)
    trackers = await start_cluster(make_tracker, 4, bus=bus)
    replays = [Replay() for _ in trackers]
    for t, replay in zip(trackers, replays, strict=True):
        t.subscribe(replay)
    work = Workload(trackers, seed=2)
    await work.run(300, pause=0.02)
    await converged(trackers, work.topics, work.rows, timeout=10)
    for t, replay in zip(trackers, replays, strict=True):
        assert replay.problems == []
        await eventually(
            lambda t=t, replay=replay: replay.visible == visible_refs(t, work.topics), timeout=0.5
        )
    # Stays converged: no late duplicate resurrects anything.
    await asyncio.sleep(0.3)
    await converged(trackers, work.topics, work.rows, timeout=0)


async def partition_and_heal(make_tracker, hold: float) -> None:
    bus = LocalBus(seed=3)
    trackers = await start_cluster(make_tracker, 4, bus=bus)
    left, right = trackers[:2], trackers[2:]
    ids = {t.replica_id for t in trackers}
    replays = [Replay() for _ in trackers]
    for t, replay in zip(trackers, replays, strict=True):
        t.subscribe(replay)
    work = Workload(trackers, seed=5)
    await work.run(60)
    await converged(trackers, work.topics, work.rows)

    bus.partition([t.replica_id for t in left], [t.replica_id for t in right])
    loop = asyncio.get_running_loop()
    cut_at = loop.time()
    sides = [
        Workload(left, seed=8, labels=["r0", "r1"], model=work),
        Workload(right, seed=9, labels=["r2", "r3"], model=work),
    ]
    steps = 0
    while loop.time() - cut_at < hold:
        for side in sides:
            await side.step()
        steps += 1
        await asyncio.sleep(0.01)
    assert steps >= 10

    if hold > FAST["down_period"]:
        # Each side has found the other down: it shows exactly its own side's rows.
        await converged(left, work.topics, work.owned_by(left), timeout=2)
        await converged(right, work.topics, work.owned_by(right), timeout=2)
        for side, other in ((left, right), (right, left)):
            for t in side:
                assert {p: s for p, s in t.replicas().items() if p in ids} == {
                    **{x.replica_id: "up" for x in side},
                    **{x.replica_id: "down" for x in other},
                }

    bus.heal()
    await converged(trackers, work.topics, work.rows, timeout=5)
    await eventually(lambda: all(t.replicas() == dict.fromkeys(ids, "up") for t in trackers))
    # No ghost comes back later, and the diffs told every subscriber the same story.
    await asyncio.sleep(5 * FAST["broadcast_period"])
    await converged(trackers, work.topics, work.rows, timeout=0)
    for t, replay in zip(trackers, replays, strict=True):
        assert replay.problems == []
        await eventually(
            lambda t=t, replay=replay: replay.visible == visible_refs(t, work.topics), timeout=0.5
        )


async def test_partition_shorter_than_down_period_then_heal(make_tracker):
    await partition_and_heal(make_tracker, hold=0.25)


async def test_partition_longer_than_down_period_then_heal(make_tracker):
    await partition_and_heal(make_tracker, hold=1.0)


# -- peers leaving: crash, goodbye, replacement, netsplit, permdown ------------------------


async def two_with_rows(make_tracker, bus, count=5, **options):
    """Replicas a and b (b with `options`), b tracking `count` rows on "room", seen by a."""
    a = await make_tracker(bus=bus)
    b = await make_tracker(bus=bus, **options)
    b_refs = {await b.track(f"c{i}", "room", f"k{i}", {"i": i}) for i in range(count)}
    await a.track("a-conn", "room", "a-key", {})
    await eventually(lambda: len(a.list("room")) == count + 1 and len(b.list("room")) == count + 1)
    return a, b, b_refs


async def test_a_replica_cancelled_without_a_word_is_down_after_down_period(make_tracker):
    bus = LocalBus()
    a, b, b_refs = await two_with_rows(make_tracker, bus)
    c = await make_tracker(bus=bus)
    await eventually(lambda: len(c.list("room")) == 6)
    seen = Recorder()
    a.subscribe(seen)
    loop = asyncio.get_running_loop()

    await b.stop(graceful=False)
    stopped = loop.time()
    await asyncio.sleep(FAST["down_period"] / 2)
    assert len(a.list("room")) == 6  # not yet: b might only be slow
    assert a.replicas()[b.replica_id] == "up"

    await eventually(lambda: a.list("room") == [("a-key", {})], timeout=3)
    elapsed = loop.time() - stopped
    # Down after down_period since the last heartbeat heard (at most one silent interval
    # before the stop), and not much later.
    silent = FAST["broadcast_period"] * FAST["max_silent_periods"]
    assert FAST["down_period"] - silent - 0.02 <= elapsed <= FAST["down_period"] + 0.3
    await eventually(lambda: refs(seen.leaves("room")) == b_refs, timeout=0.5)
    assert seen.joins() == []
    assert a.replicas() == {a.replica_id: "up", b.replica_id: "down", c.replica_id: "up"}
    await eventually(lambda: c.list("room") == [("a-key", {})], timeout=1)


async def test_graceful_stop_removes_rows_on_peers_within_one_period(make_tracker):
    bus = LocalBus()
    a, b, b_refs = await two_with_rows(make_tracker, bus)
    seen = Recorder()
    a.subscribe(seen)
    await b.stop()  # graceful by default
    took = await eventually(lambda: a.list("room") == [("a-key", {})], interval=0.002)
    assert took <= FAST["broadcast_period"]
    await eventually(lambda: refs(seen.leaves("room")) == b_refs, timeout=0.5)
    assert a.replicas() == {a.replica_id: "up"}  # gone for good, not down
    # Nothing of b comes back later.
    await asyncio.sleep(FAST["down_period"])
    assert a.list("room") == [("a-key", {})]
    assert refs(seen.leaves()) == b_refs and seen.joins() == []


async def test_a_new_replica_with_the_same_node_name_replaces_the_old_one_at_once(
    make_tracker,
):
    bus = LocalBus()
    a, old, old_refs = await two_with_rows(make_tracker, bus, node_name="node-b")
    c = await make_tracker(bus=bus)
    await eventually(lambda: len(c.list("room")) == 6)
    seen = Recorder()
    a.subscribe(seen)

    # The node restarts faster than down_period: a crash, then a new replica at once.
    await old.stop(graceful=False)
    new = await make_tracker(bus=bus, node_name="node-b")
    await replaced(a, c, new, old, seen, old_refs)


async def test_a_replaced_replica_that_keeps_running_is_ignored_by_its_peers(make_tracker):
    bus = LocalBus()
    a, old, old_refs = await two_with_rows(make_tracker, bus, node_name="node-b")
    c = await make_tracker(bus=bus)
    await eventually(lambda: len(c.list("room")) == 6)
    seen = Recorder()
    a.subscribe(seen)

    new = await make_tracker(bus=bus, node_name="node-b")
    late = await old.track("late", "room", "late", {})  # the old process still talks
    await replaced(a, c, new, old, seen, old_refs, maybe={late})
    await old.stop()  # and its goodbye changes nothing either
    await asyncio.sleep(2 * FAST["broadcast_period"])
    want = [("a-key", {}), ("k0", {"i": "new"})]
    assert sorted(a.list("room")) == sorted(c.list("room")) == want


async def replaced(a, c, new, old, seen, old_refs, maybe=frozenset()):
    """a and c drop old's rows as soon as they hear of new, its successor, for good.
    `maybe`: old's rows that a may or may not have shown before it heard of new."""
    assert new.replica_id != old.replica_id
    new_ref = await new.track("c0", "room", "k0", {"i": "new"})

    want = sorted([("a-key", {}), ("k0", {"i": "new"})])
    took = await eventually(lambda: sorted(a.list("room")) == want, interval=0.002)
    assert took < FAST["down_period"] / 2  # at once, not by down detection
    await eventually(lambda: sorted(c.list("room")) == want, timeout=FAST["down_period"] / 2)

    def reported() -> None:
        assert refs(seen.joins("room")) - maybe == {new_ref}
        assert refs(seen.leaves("room")) - maybe == old_refs

    await eventually(reported, timeout=0.5)
    ids = {a.replica_id, c.replica_id, new.replica_id}
    for t in (a, c):
        await eventually(lambda t=t: t.replicas() == dict.fromkeys(ids, "up"))
    # Later the old id is never reported down, and its rows never come back.
    await asyncio.sleep(FAST["down_period"] + 0.2)
    assert sorted(a.list("room")) == want
    assert sorted(c.list("room")) == want
    assert a.replicas() == dict.fromkeys(ids, "up")
    reported()


async def test_the_same_identity_back_after_a_long_netsplit_brings_its_rows_back(make_tracker):
    bus = LocalBus()
    a, b, b_refs = await two_with_rows(make_tracker, bus)
    seen = Recorder()
    a.subscribe(seen)
    bus.partition([a.replica_id], [b.replica_id])
    await eventually(lambda: a.list("room") == [("a-key", {})], timeout=3)
    await eventually(lambda: b.list("room") == [(f"k{i}", {"i": i}) for i in range(5)])
    assert a.replicas() == {a.replica_id: "up", b.replica_id: "down"}
    await eventually(lambda: refs(seen.leaves()) == b_refs, timeout=0.5)

    # b changes while cut off: one row leaves, one changes, one is new.
    await b.untrack("c0", "room", "k0")
    updated = await b.update("c1", "room", "k1", {"i": "updated"})
    added = await b.track("c9", "room", "k9", {"i": 9})
    await asyncio.sleep(0.2)
    seen.clear()

    bus.heal()
    want = sorted(
        [("a-key", {}), ("k1", {"i": "updated"}), ("k9", {"i": 9})]
        + [(f"k{i}", {"i": i}) for i in range(2, 5)]
    )
    await eventually(lambda: sorted(a.list("room")) == want, timeout=3)
    await eventually(lambda: sorted(b.list("room")) == want)
    assert a.replicas() == {a.replica_id: "up", b.replica_id: "up"}
    by_key = {m["ref"]: key for key, e in a.presence("room").items() for m in e["metas"]}
    back = {r for r in b_refs if by_key.get(r) in {"k2", "k3", "k4"}}
    assert len(back) == 3
    # Every row of b that is visible now was reported as a join since the heal.
    now_visible = {m["ref"] for e in a.presence("room").values() for m in e["metas"]}
    assert now_visible - {m["ref"] for m in a.presence("room")["a-key"]["metas"]} == (
        back | {updated, added}
    )
    await eventually(
        lambda: refs(seen.joins()) - refs(seen.leaves()) == back | {updated, added}, timeout=0.5
    )


async def test_a_replica_silent_for_permdown_period_is_purged(make_tracker):
    bus = LocalBus()
    a, b, b_refs = await two_with_rows(make_tracker, bus)
    seen = Recorder()
    a.subscribe(seen)
    loop = asyncio.get_running_loop()
    await b.stop(graceful=False)
    stopped = loop.time()
    await eventually(lambda: a.replicas().get(b.replica_id) == "down", timeout=3)
    (peers,) = [s["peers"] for s in a.status()["shards"]]
    assert peers[b.replica_id]["rows"] == 5  # hidden, kept in case b comes back

    await eventually(lambda: b.replica_id not in a.replicas(), timeout=5)
    elapsed = loop.time() - stopped
    silent = FAST["broadcast_period"] * FAST["max_silent_periods"]
    assert FAST["permdown_period"] - silent - 0.02 <= elapsed <= FAST["permdown_period"] + 0.3
    (peers,) = [s["peers"] for s in a.status()["shards"]]
    assert b.replica_id not in peers
    assert a.replicas() == {a.replica_id: "up"}
    # The leaves were reported once, at down; permdown purges hidden rows silently.
    await asyncio.sleep(2 * FAST["broadcast_period"])
    assert refs(seen.leaves()) == b_refs and len(seen.leaves()) == 5
    assert seen.joins() == []
    assert a.list("room") == [("a-key", {})]


async def test_the_same_identity_back_after_permdown_is_welcomed_afresh(make_tracker):
    # Purged after permdown_period, then heard again (a netsplit longer than permdown):
    # peers hold nothing of it any more, so they ask for everything and show its
    # current rows, not the ones they purged.
    bus = LocalBus()
    a, b, b_refs = await two_with_rows(make_tracker, bus)
    bus.partition([a.replica_id], [b.replica_id])
    await eventually(lambda: b.replica_id not in a.replicas(), timeout=5)
    await eventually(lambda: a.replica_id not in b.replicas(), timeout=1)
    await b.untrack("c0", "room", "k0")
    await b.update("c1", "room", "k1", {"i": "updated"})
    await a.update("a-conn", "room", "a-key", {"a": "updated"})
    seen = Recorder()
    a.subscribe(seen)

    bus.heal()
    want = sorted(
        [("a-key", {"a": "updated"}), ("k1", {"i": "updated"})]
        + [(f"k{i}", {"i": i}) for i in range(2, 5)]
    )
    await eventually(lambda: sorted(a.list("room")) == want, timeout=3)
    await eventually(lambda: sorted(b.list("room")) == want, timeout=1)
    assert a.replicas() == b.replicas() == {a.replica_id: "up", b.replica_id: "up"}
    await eventually(lambda: len(seen.joins()) == 4, timeout=0.5)
    assert {row.key for row in seen.joins()} == {"k1", "k2", "k3", "k4"}
    assert seen.leaves() == []


async def test_the_successor_agrees_with_its_peers_while_its_predecessor_still_runs(
    make_tracker,
):
    bus = LocalBus()
    a, old, _ = await two_with_rows(make_tracker, bus, node_name="node-b")
    new = await make_tracker(bus=bus, node_name="node-b")
    await new.track("c0", "room", "k0", {"i": "new"})
    want = sorted([("a-key", {}), ("k0", {"i": "new"})])
    await eventually(lambda: sorted(a.list("room")) == want, timeout=1)
    await asyncio.sleep(4 * FAST["broadcast_period"])
    assert sorted(new.list("room")) == want


async def test_a_peer_that_meets_both_incarnations_keeps_the_newer_whatever_the_order(
    make_tracker,
):
    """Ids carry no order, so heartbeats carry the start time: a replica that first hears
    the new incarnation of a node, then the old one still running, keeps the new one."""
    bus = LocalBus()
    old = await make_tracker(bus=bus, node_name="node-x")
    await old.track("c-old", "room", "old", {})
    await asyncio.sleep(0.01)
    new = await make_tracker(bus=bus, node_name="node-x")
    await new.track("c-new", "room", "new", {})
    z = await make_tracker(bus=bus)
    bus.partition([old.replica_id], [z.replica_id])
    await eventually(lambda: z.list("room") == [("new", {})], timeout=1)
    bus.heal()  # now z hears the old incarnation too
    await old.track("c-old-2", "room", "old-2", {})
    await asyncio.sleep(6 * FAST["broadcast_period"])
    assert z.list("room") == [("new", {})]
    assert old.replica_id not in z.replicas()
    assert new.list("room") == [("new", {})]


async def test_a_newcomer_is_greeted_by_direct_transfers_not_broadcasts(make_tracker):
    """Each peer answers a newcomer's first heartbeat with its rows, to the newcomer alone:
    a join costs the newcomer's broadcast plus N-1 direct messages, not N-1 broadcasts."""
    bus = LocalBus()
    quiet = {"max_silent_periods": 20, "down_period": 3.0, "permdown_period": 10.0}
    peers = await start_cluster(make_tracker, 8, bus=bus, **quiet)
    for i, peer in enumerate(peers):
        await peer.track(f"c{i}", "room", f"k{i}", {})
    await eventually(lambda: all(len(p.list("room")) == 8 for p in peers))
    await asyncio.sleep(0.1)  # the deltas of those tracks are out
    before = bus.messages
    newcomer = await make_tracker(bus=bus, **quiet)
    await eventually(lambda: len(newcomer.list("room")) == 8, timeout=0.5)
    assert set(newcomer.replicas()) == {newcomer.replica_id, *(p.replica_id for p in peers)}
    # 8 deliveries of its hello and 8 greetings, plus room for two peers' silent heartbeats
    # falling in the window; greeting by broadcast would cost 8 x 8 deliveries on its own.
    assert bus.messages - before < 8 + 8 + 20
