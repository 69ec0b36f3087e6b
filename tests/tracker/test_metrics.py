"""The Prometheus collector of a Tracker, over two trackers on an in-process bus."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from tests.prometheus_text import Scrape
from tests.tracker.conftest import FAST, eventually
from tracker import LocalBus, Tracker
from tracker.metrics import TrackerCollector

SHARD_COUNTERS = {
    "tracker_heartbeats_sent_total": "heartbeats_sent",
    "tracker_heartbeats_received_total": "heartbeats_received",
    "tracker_transfers_requested_total": "transfers_requested",
    "tracker_transfers_sent_total": "transfers_sent",
    "tracker_transfers_received_total": "transfers_received",
    "tracker_full_transfers_sent_total": "full_transfers_sent",
    "tracker_sent_bytes_total": "bytes_sent",
    "tracker_received_bytes_total": "bytes_received",
}


def scrape(tracker: Tracker | None, topics: tuple[str, ...] = ()) -> Scrape:
    registry = CollectorRegistry()
    registry.register(TrackerCollector(lambda: tracker, topics=topics))
    return Scrape(generate_latest(registry).decode())


async def test_no_tracker_or_a_stopped_one_reports_only_that_it_is_not_running(make_tracker):
    assert set(scrape(None).values) == {("tracker_running", frozenset())}
    assert scrape(None).value("tracker_running") == 0
    tracker = await make_tracker("m", bus=LocalBus())
    assert scrape(tracker).value("tracker_running") == 1
    await tracker.stop(graceful=False)
    assert set(scrape(tracker).values) == {("tracker_running", frozenset())}


async def test_presences_owned_rows_and_peers(make_tracker):
    bus = LocalBus()
    a = await make_tracker("m", bus=bus)
    b = await make_tracker("m", bus=bus)
    for conn in ("c1", "c2", "c3"):
        await a.track(conn, "lobby", f"user-{conn}", {})
    await a.track("c1", "kitchen", "user-c1", {})
    await b.track("c9", "lobby", "user-c9", {})
    await eventually(lambda: len(a.list("lobby")) == 4)

    metrics = scrape(a, topics=("lobby", "attic"))
    assert metrics.value("tracker_presences", topic="lobby") == 4
    assert metrics.value("tracker_presences", topic="kitchen") == 1
    assert metrics.value("tracker_presences", topic="attic") == 0  # named, so never absent
    assert metrics.value("tracker_owned_presences") == 4
    assert metrics.value("tracker_peers", status="up") == 1
    assert metrics.value("tracker_peers", status="down") == 0
    assert metrics.labels("tracker_info") == [
        {"tracker": "m", "replica": a.replica_id, "transport": "in-process bus (m)"}
    ]
    assert metrics.labels("tracker_peer_heartbeat_age_seconds") == [
        {"shard": "0", "replica": b.replica_id}
    ]
    assert (
        0
        <= metrics.value("tracker_peer_heartbeat_age_seconds", shard="0", replica=b.replica_id)
        < 2 * FAST["broadcast_period"] * FAST["max_silent_periods"]
    )

    await b.stop(graceful=False)  # a crash: b goes down after down_period, its rows hidden
    await eventually(lambda: scrape(a).value("tracker_peers", status="down") == 1)
    metrics = scrape(a)
    assert metrics.value("tracker_peers", status="up") == 0
    assert metrics.value("tracker_presences", topic="lobby") == 3
    assert (
        metrics.value("tracker_peer_heartbeat_age_seconds", shard="0", replica=b.replica_id)
        >= FAST["down_period"]
    )


async def test_counters_and_summaries_are_the_shard_stats(make_tracker):
    bus = LocalBus()
    a = await make_tracker("m", bus=bus, pool_size=2)
    b = await make_tracker("m", bus=bus, pool_size=2)
    for topic in ("lobby", "kitchen", "hall"):
        await b.track("c1", topic, "k", {"n": 1})
    await eventually(lambda: sum(len(a.list(t)) for t in ("lobby", "kitchen", "hall")) == 3)
    for shard in a.shards:  # b asks for transfers, so a extracts some
        b.shards[shard.index].request_transfer(a.replica_id, force=True)
    await eventually(lambda: all(shard.stats.extracts for shard in a.shards))

    metrics = scrape(a)
    status = a.status()  # read right after the scrape, with no await between
    assert len(status["shards"]) == 2
    for shard in status["shards"]:
        label = str(shard["index"])
        stats = shard["stats"]
        for name, field in SHARD_COUNTERS.items():
            assert metrics.value(name, shard=label) == stats[field], name
        assert stats["heartbeats_sent"] > 0 and stats["heartbeats_received"] > 0
        assert metrics.value("tracker_merge_duration_seconds_count", shard=label) == stats["merges"]
        assert (
            metrics.value("tracker_merge_duration_seconds_sum", shard=label)
            == stats["merge_seconds"]
        )
        assert (
            metrics.value("tracker_extract_duration_seconds_count", shard=label)
            == stats["extracts"]
        )
        assert (
            metrics.value("tracker_extract_duration_seconds_sum", shard=label)
            == stats["extract_seconds"]
        )
        assert stats["merges"] > 0 and stats["extracts"] > 0 and stats["transfers_sent"] > 0
    assert metrics.value("tracker_publish_failures_total") == a.publish_failures == 0
    assert metrics.families["tracker_merge_duration_seconds"].type == "summary"
    assert metrics.families["tracker_heartbeats_sent"].type == "counter"
