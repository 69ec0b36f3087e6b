"""The public Tracker API over the in-process transport: replicas in one event loop."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tracker import (
    AlreadyTracked,
    ConfigurationError,
    InvalidMeta,
    LocalBus,
    NotTracked,
    Presence,
    Tracker,
)

from .conftest import FAST, Recorder, eventually, refs


def srt(rows):
    """Rows in a canonical order, for exact comparison (duplicates kept)."""
    return sorted(rows, key=repr)


async def settle() -> None:
    """Let call_soon callbacks (local diff dispatch, in-process delivery) run."""
    for _ in range(3):
        await asyncio.sleep(0)


# -- reads and writes on one replica -------------------------------------------------------


async def test_track_list_get_by_key_and_presence(make_tracker):
    t = await make_tracker(bus=LocalBus())
    r1 = await t.track("c1", "room", "alice", {"n": 1})
    r2 = await t.track("c2", "room", "alice", {"n": 2})
    r3 = await t.track("c3", "room", "bob", {"n": 3})
    r4 = await t.track("c1", "hall", "alice", {"n": 4})

    assert len({r1, r2, r3, r4}) == 4
    assert srt(t.list("room")) == srt([("alice", {"n": 1}), ("alice", {"n": 2}), ("bob", {"n": 3})])
    assert t.list("hall") == [("alice", {"n": 4})]
    assert t.list("nowhere") == []
    assert srt(t.get_by_key("room", "alice")) == srt([("c1", {"n": 1}), ("c2", {"n": 2})])
    assert t.get_by_key("room", "carol") == []
    assert t.get_by_key("nowhere", "alice") == []

    presence = t.presence("room")
    assert set(presence) == {"alice", "bob"}
    assert sorted(presence["alice"]["metas"], key=lambda m: m["n"]) == [
        {"n": 1, "ref": r1},
        {"n": 2, "ref": r2},
    ]
    assert presence["bob"] == {"metas": [{"n": 3, "ref": r3}]}
    assert t.presence("nowhere") == {}


async def test_update_replaces_the_row_everywhere_and_returns_a_new_ref(make_tracker):
    bus = LocalBus()
    a = await make_tracker(bus=bus)
    b = await make_tracker(bus=bus)
    old = await a.track("c1", "room", "alice", {"v": 1})
    await eventually(lambda: b.list("room") == [("alice", {"v": 1})])

    new = await a.update("c1", "room", "alice", {"v": 2})
    assert new != old
    assert a.list("room") == [("alice", {"v": 2})]
    assert a.presence("room") == {"alice": {"metas": [{"v": 2, "ref": new}]}}
    await eventually(lambda: b.list("room") == [("alice", {"v": 2})])
    assert b.presence("room") == {"alice": {"metas": [{"v": 2, "ref": new}]}}

    # Many updates in a row never leave an old row behind, locally or on the peer.
    for v in range(3, 30):
        new = await a.update("c1", "room", "alice", {"v": v})
    assert a.list("room") == [("alice", {"v": 29})]
    await eventually(lambda: b.presence("room") == {"alice": {"metas": [{"v": 29, "ref": new}]}})


async def test_untrack_and_untrack_all(make_tracker):
    bus = LocalBus()
    a = await make_tracker(bus=bus)
    b = await make_tracker(bus=bus)
    await a.track("c1", "room", "k1", {})
    await a.track("c1", "room", "k2", {})
    await a.track("c1", "hall", "k1", {})
    await a.track("c2", "room", "k1", {"other": True})
    await a.track("c2", "hall", "k3", {})

    await a.untrack("c1", "room", "k2")
    await a.untrack("c1", "room", "k2")  # not tracked any more: nothing happens
    await a.untrack("nobody", "room", "k1")
    assert srt(a.list("room")) == srt([("k1", {}), ("k1", {"other": True})])

    await a.untrack_all("c1")
    assert a.list("room") == [("k1", {"other": True})]
    assert a.list("hall") == [("k3", {})]
    assert a.get_by_key("room", "k1") == [("c2", {"other": True})]
    await a.untrack_all("c1")  # nothing left: nothing happens
    await eventually(
        lambda: (b.list("room"), b.list("hall")) == ([("k1", {"other": True})], [("k3", {})])
    )

    # A conn may track the same key again once it left.
    await a.track("c1", "room", "k2", {"again": 1})
    await eventually(lambda: sorted(b.get_by_key("room", "k2")) == [("c1", {"again": 1})])


async def test_meta_is_detached_from_the_callers_dict(make_tracker):
    bus = LocalBus()
    a = await make_tracker(bus=bus)
    b = await make_tracker(bus=bus)
    meta = {"tags": ["x"], "nested": {"n": 1}, "pair": (1, 2)}
    await a.track("c1", "room", "k", meta)
    meta["tags"].append("y")
    meta["nested"]["n"] = 99
    meta["new"] = True
    # Stored as it will travel: a tuple is a list on every replica, local or remote.
    want = [("k", {"tags": ["x"], "nested": {"n": 1}, "pair": [1, 2]})]
    assert a.list("room") == want
    await eventually(lambda: b.list("room") == want)

    update = {"tags": ["u"]}
    await a.update("c1", "room", "k", update)
    update["tags"].clear()
    assert a.list("room") == [("k", {"tags": ["u"]})]
    await eventually(lambda: b.list("room") == [("k", {"tags": ["u"]})])


# -- diffs ---------------------------------------------------------------------------------


async def test_subscribe_reports_local_changes_as_diffs(make_tracker):
    t = await make_tracker(bus=LocalBus())
    seen = Recorder()
    unsubscribe = t.subscribe(seen)

    r1 = await t.track("c1", "room", "k", {"v": 1})
    await settle()
    assert len(seen.diffs) == 1
    ((joins, leaves),) = seen.diffs[0].values()
    assert list(seen.diffs[0]) == ["room"]
    assert [(p.conn, p.key, p.meta, p.ref) for p in joins] == [("c1", "k", {"v": 1}, r1)]
    assert leaves == []
    assert all(isinstance(p, Presence) for p in joins)

    seen.clear()
    r2 = await t.update("c1", "room", "k", {"v": 2})
    await settle()
    assert len(seen.diffs) == 1
    joins, leaves = seen.diffs[0]["room"]
    assert [(p.ref, p.meta) for p in joins] == [(r2, {"v": 2})]
    assert [(p.ref, p.meta) for p in leaves] == [(r1, {"v": 1})]

    seen.clear()
    r3 = await t.track("c1", "hall", "k", {})
    await t.untrack("c1", "room", "k")  # same loop iteration: one diff over two topics
    await settle()
    assert len(seen.diffs) == 1
    assert {topic: (refs(j), refs(lv)) for topic, (j, lv) in seen.diffs[0].items()} == {
        "hall": ({r3}, set()),
        "room": (set(), {r2}),
    }

    seen.clear()
    await t.untrack_all("c1")
    await settle()
    assert [{t_: (refs(j), refs(lv)) for t_, (j, lv) in d.items()} for d in seen.diffs] == [
        {"hall": (set(), {r3})}
    ]

    # A row that joined and left within one batch appears in no diff.
    seen.clear()
    await t.track("c9", "room", "k", {})
    await t.untrack("c9", "room", "k")
    await settle()
    assert seen.diffs == []

    unsubscribe()
    await t.track("c2", "room", "k", {})
    await settle()
    assert seen.diffs == []
    unsubscribe()  # twice is harmless


async def test_subscribe_reports_remote_changes_with_the_owners_refs(make_tracker):
    bus = LocalBus()
    a = await make_tracker(bus=bus)
    b = await make_tracker(bus=bus)
    seen = Recorder()
    a.subscribe(seen)

    r1 = await b.track("c1", "room", "k1", {"v": 1})
    r2 = await b.track("c2", "room", "k2", {"v": 1})
    await eventually(lambda: refs(seen.joins("room")) == {r1, r2})
    assert seen.leaves() == []
    assert all(p.replica == b.replica_id for p in seen.joins())

    seen.clear()
    r3 = await b.update("c1", "room", "k1", {"v": 2})
    await eventually(lambda: refs(seen.joins()) == {r3} and refs(seen.leaves()) == {r1})
    for diff in seen.diffs:
        for joins, leaves in diff.values():
            assert not refs(joins) & refs(leaves)

    seen.clear()
    await b.untrack_all("c2")
    await b.untrack("c1", "room", "k1")
    await eventually(lambda: refs(seen.leaves()) == {r2, r3})
    assert seen.joins() == []
    assert a.list("room") == []


async def test_replicas_lists_self_and_peers(make_tracker):
    bus = LocalBus()
    a = await make_tracker(bus=bus)
    assert a.replicas() == {a.replica_id: "up"}
    b = await make_tracker(bus=bus)
    c = await make_tracker("other-name", bus=bus)  # another tracker name: not a peer
    want = {a.replica_id: "up", b.replica_id: "up"}
    await eventually(lambda: a.replicas() == want and b.replicas() == want)
    assert c.replicas() == {c.replica_id: "up"}
    assert len({a.replica_id, b.replica_id, c.replica_id}) == 3


async def test_a_failing_and_a_slow_subscriber_do_not_stall_replication(make_tracker, caplog):
    bus = LocalBus()
    a = await make_tracker(bus=bus)
    b = await make_tracker(bus=bus)

    failures = []

    def failing(diff):
        failures.append(diff)
        raise RuntimeError("subscriber bug")

    async def failing_async(diff):
        failures.append(diff)
        raise RuntimeError("async subscriber bug")

    slow_calls = []
    never = asyncio.Event()

    async def slow(diff):
        slow_calls.append(diff)
        await never.wait()  # never returns while the test runs

    seen = Recorder()
    a.subscribe(failing)
    a.subscribe(failing_async)
    a.subscribe(slow)
    a.subscribe(seen)

    with caplog.at_level(logging.ERROR, logger="tracker"):
        rows = {}
        for i in range(20):
            rows[await b.track(f"c{i}", "room", f"k{i}", {"i": i})] = i
            if i % 5 == 0:
                await asyncio.sleep(0.06)  # several heartbeats, so several diffs
        await eventually(lambda: len(a.list("room")) == 20)
        want = srt([(f"k{i}", {"i": i}) for i in range(20)])
        assert srt(a.list("room")) == want
        await eventually(lambda: refs(seen.joins()) == set(rows))
        # Our own changes still reach the peer.
        await a.track("mine", "room", "a", {})
        await eventually(lambda: srt(b.list("room")) == srt([*want, ("a", {})]))

        # Both failing subscribers are called for every diff, not dropped after a failure.
        await eventually(lambda: len(failures) == 2 * len(seen.diffs))
        assert len(seen.diffs) >= 3
        assert len(slow_calls) == 1  # still stuck in its first diff; nobody waits for it
    assert "subscriber bug" in caplog.text and "async subscriber bug" in caplog.text


# -- errors --------------------------------------------------------------------------------


async def test_write_errors(make_tracker):
    t = await make_tracker(bus=LocalBus())
    seen = Recorder()
    t.subscribe(seen)
    await t.track("c1", "room", "k", {"v": 1})
    with pytest.raises(AlreadyTracked):
        await t.track("c1", "room", "k", {"v": 2})
    with pytest.raises(NotTracked):
        await t.update("c1", "room", "other", {})
    with pytest.raises(NotTracked):
        await t.update("c2", "room", "k", {})

    for bad in (None, [("a", 1)], "meta", 3):
        with pytest.raises(InvalidMeta):
            await t.track("c2", "room", "k", bad)
    for bad in ({"x": object()}, {"x": {1, 2}}, {"x": 2**70}):
        with pytest.raises(InvalidMeta):
            await t.track("c2", "room", "k", bad)
        with pytest.raises(InvalidMeta):
            await t.update("c1", "room", "k", bad)
    assert issubclass(InvalidMeta, TypeError)

    for args in ((1, "room", "k"), ("c2", b"room", "k"), ("c2", "room", None)):
        with pytest.raises(TypeError):
            await t.track(*args, {})
        with pytest.raises(TypeError):
            await t.update(*args, {})
        with pytest.raises(TypeError):
            await t.untrack(*args)

    # Nothing of the failed calls was stored or reported.
    await settle()
    assert t.list("room") == [("k", {"v": 1})]
    assert len(seen.joins()) == 1 and seen.leaves() == []


async def test_calls_before_start_and_after_stop(make_tracker):
    t = await make_tracker(bus=LocalBus(), start=False)
    assert t.replicas() == {}
    assert t.list("room") == []
    for call in (
        lambda: t.track("c", "room", "k", {}),
        lambda: t.update("c", "room", "k", {}),
        lambda: t.untrack("c", "room", "k"),
        lambda: t.untrack_all("c"),
    ):
        with pytest.raises(RuntimeError, match="start"):
            await call()
    await t.start()
    await t.start()  # idempotent
    await t.track("c", "room", "k", {})
    await t.stop()
    await t.stop()  # idempotent
    with pytest.raises(RuntimeError, match="start"):
        await t.track("c", "room", "k2", {})


@pytest.mark.parametrize(
    "options, match",
    [
        # down_period must be >= 2 x broadcast_period x max_silent_periods (here 2 x 0.5)
        ({"broadcast_period": 0.1, "max_silent_periods": 5, "down_period": 0.99}, "down_period"),
        ({"broadcast_period": 0.5, "max_silent_periods": 1, "down_period": 0.9}, "down_period"),
        ({"down_period": 10, "permdown_period": 10}, "permdown_period"),
        ({"down_period": 10, "permdown_period": 5}, "permdown_period"),
        ({"max_delta_sizes": ()}, "max_delta_sizes"),
        ({"max_delta_sizes": (0, 10)}, "max_delta_sizes"),
        ({"max_delta_sizes": (100, 10)}, "max_delta_sizes"),
        ({"max_delta_sizes": (10, 10)}, "max_delta_sizes"),
        ({"broadcast_period": 0}, "broadcast_period"),
        ({"broadcast_period": -1}, "broadcast_period"),
        ({"max_silent_periods": 0}, "max_silent_periods"),
        ({"max_silent_periods": 1.5}, "max_silent_periods"),
        ({"clock_sample_periods": 0}, "clock_sample_periods"),
        ({"pool_size": 0}, "pool_size"),
        ({"pool_size": True}, "pool_size"),
        ({"channel_prefix": "a:b"}, "channel_prefix"),
        ({"broadcast_perod": 0.1}, "unknown tracker option.*broadcast_perod"),
    ],
)
def test_invalid_options_raise_configuration_error(options, match):
    with pytest.raises(ConfigurationError, match=match):
        Tracker("t", **options)
    assert issubclass(ConfigurationError, ValueError)


def test_valid_boundary_options_are_accepted():
    # exactly 2 x broadcast_period x max_silent_periods is enough
    Tracker("t", broadcast_period=0.1, max_silent_periods=5, down_period=1.0, permdown_period=1.01)
    Tracker("t", max_delta_sizes=[5])
    Tracker("t")  # the defaults are valid


def test_invalid_names_and_transport_choices():
    with pytest.raises(ValueError):
        Tracker("")
    with pytest.raises(ValueError):
        Tracker("a:b")
    with pytest.raises(ValueError):
        Tracker("t", redis_url="redis://127.0.0.1:1/0", bus=LocalBus())


# -- shards --------------------------------------------------------------------------------


async def test_pool_size_spreads_topics_over_shards_and_replicates_each(make_tracker):
    bus = LocalBus()
    a = await make_tracker(bus=bus, pool_size=4)
    b = await make_tracker(bus=bus, pool_size=4)
    topics = [f"topic-{i}" for i in range(16)]
    for topic in topics:
        await a.track("shared-conn", topic, "k", {"topic": topic})
        await a.track(f"own-{topic}", topic, "k", {"own": topic})
        await b.track("b-conn", topic, "kb", {})

    per_shard = [shard["rows"] for shard in a.status()["shards"]]
    assert len(per_shard) == 4
    assert sum(per_shard) == 32
    assert sum(1 for n in per_shard if n) > 1, per_shard  # topics do land on different shards

    def want(topic, with_shared=True):
        rows = [("k", {"own": topic}), ("kb", {})]
        if with_shared:
            rows.append(("k", {"topic": topic}))
        return srt(rows)

    await eventually(
        lambda: (
            all(srt(b.list(t)) == want(t) for t in topics)
            and all(srt(a.list(t)) == want(t) for t in topics)
        )
    )

    await a.untrack_all("shared-conn")  # rows on every shard
    for topic in topics:
        assert srt(a.list(topic)) == want(topic, with_shared=False)
    await eventually(lambda: all(srt(b.list(t)) == want(t, with_shared=False) for t in topics))
    assert sum(shard["rows"] for shard in a.status()["shards"]) == 16
    assert b.replicas() == {a.replica_id: "up", b.replica_id: "up"}


async def test_refs_are_unique_across_shards(make_tracker):
    # Presence.ref is documented as "a cluster-wide unique name of this row".
    t = await make_tracker(bus=LocalBus(), pool_size=3)
    topics = ["a", "b", "cart"]  # crc32 % 3: shards 0, 2 and 1
    refs_made = [await t.track("c", topic, "k", {}) for topic in topics]
    assert len({shard["rows"] for shard in t.status()["shards"]}) == 1  # one row per shard
    assert len(set(refs_made)) == len(topics), refs_made


# -- lifecycle -----------------------------------------------------------------------------


async def test_an_observer_reads_the_cluster_without_being_listed(make_tracker):
    bus = LocalBus()
    a = await make_tracker(bus=bus)
    b = await make_tracker(bus=bus)
    await a.track("c1", "room", "k1", {})
    await b.track("c2", "room", "k2", {})
    observer = await make_tracker(bus=bus, observer=True)
    assert await observer.sync(within=3.0)
    assert sorted(observer.list("room")) == [("k1", {}), ("k2", {})]
    assert observer.replicas() == {a.replica_id: "up", b.replica_id: "up"}
    await asyncio.sleep(3 * FAST["broadcast_period"])
    assert observer.replica_id not in a.replicas()
    assert observer.replica_id not in b.replicas()
    with pytest.raises(RuntimeError, match="observer"):
        await observer.track("c3", "room", "k3", {})


async def test_a_stopped_tracker_does_not_start_again_under_its_spent_id(make_tracker):
    bus = LocalBus()
    a = await make_tracker(bus=bus)
    b = await make_tracker(bus=bus)
    await b.track("c0", "room", "k0", {})
    await eventually(lambda: a.list("room") == [("k0", {})])
    await b.stop()
    with pytest.raises(RuntimeError, match="restart"):
        await b.start()
    assert not b.running
    # A new Tracker is a new replica, which peers accept.
    c = await make_tracker(bus=bus)
    await c.track("c0", "room", "k0", {"new": True})
    await eventually(lambda: a.list("room") == [("k0", {"new": True})], timeout=2.0)
    assert a.replicas() == {a.replica_id: "up", c.replica_id: "up"}
