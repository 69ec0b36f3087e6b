"""Prometheus metrics of one Tracker (needs `prometheus-client`), read at scrape time:
the tracker counts what it does anyway (`ShardStats`), so metrics cost nothing per
operation.

    registry = CollectorRegistry()
    registry.register(TrackerCollector(get_tracker, topics=["rooms"]))
    # get_tracker() -> Tracker | None; `topics` are reported even while empty (at 0)

Families (`shard` labels the tracker's shards, `replica` a peer's replica id):
- tracker_running: 1 while the tracker runs; nothing else is reported while it does not.
- tracker_info{tracker, replica, transport}: its name, replica id and transport.
- tracker_presences{topic}: presences visible on this replica, per topic with any (one
  series per topic: fine for a few topics, not for one topic per chat room).
- tracker_owned_presences: presences this replica owns (tracks itself).
- tracker_peers{status}: peer replicas up and down (this replica not included).
- tracker_peer_heartbeat_age_seconds{shard, replica}: seconds since the peer was last heard.
- tracker_heartbeats_sent_total, tracker_heartbeats_received_total{shard}
- tracker_transfers_requested_total, tracker_transfers_sent_total,
  tracker_transfers_received_total, tracker_full_transfers_sent_total{shard}
- tracker_merge_duration_seconds, tracker_extract_duration_seconds{shard}: summaries
  (count and sum) of merging deltas and extracting transfers.
- tracker_sent_bytes_total, tracker_received_bytes_total{shard}: message payload bytes.
- tracker_messages_rejected_total{reason}: frames dropped by their checks (malformed,
  version, signature, invalid, incompatible: see tracker.wire), every reason always present.
- tracker_receive_errors_total: valid frames whose application raised (bugs, logged).
- tracker_task_failures_total{task}: background tasks that failed and were restarted.
- tracker_incompatible_peers: peers refused (other protocol version or shard count) and
  heard within down_period.
- tracker_superseded: 1 once a later process of this node name took over (see shard.py).
- tracker_healthy: 1 while `Tracker.health()` finds nothing wrong.
- tracker_transport_reconnects_total, tracker_transport_stalls_total,
  tracker_transport_last_frame_age_seconds: the Redis transport's reconnections (all, and
  those for a silent subscription) and seconds since it last heard a frame.
- tracker_publish_failures_total: batches the transport could not publish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    SummaryMetricFamily,
)
from prometheus_client.metrics_core import Metric

from .state import DOWN, UP
from .tracker import Tracker
from .wire import REASONS

# (family name, help, ShardStats field) of the counters kept per shard.
_SHARD_COUNTERS = (
    ("tracker_heartbeats_sent", "Heartbeats broadcast.", "heartbeats_sent"),
    ("tracker_heartbeats_received", "Heartbeats received from peers.", "heartbeats_received"),
    ("tracker_transfers_requested", "Transfers asked of peers.", "transfers_requested"),
    ("tracker_transfers_sent", "Transfers sent to peers that asked.", "transfers_sent"),
    ("tracker_transfers_received", "Transfers received from peers.", "transfers_received"),
    (
        "tracker_full_transfers_sent",
        "Transfers that had to carry the full state (the peer was too far behind).",
        "full_transfers_sent",
    ),
    ("tracker_sent_bytes", "Payload bytes of the messages sent.", "bytes_sent"),
    ("tracker_received_bytes", "Payload bytes of the messages received.", "bytes_received"),
)

# (family name, help, count field, seconds field) of the timed operations.
_SHARD_SUMMARIES = (
    ("tracker_merge_duration_seconds", "Merging a peer's delta.", "merges", "merge_seconds"),
    (
        "tracker_extract_duration_seconds",
        "Extracting a transfer for a peer.",
        "extracts",
        "extract_seconds",
    ),
)


class TrackerCollector:
    """Reports the tracker that `get_tracker` returns at each scrape (None: not started).
    `topics` always have a presence count, so that an empty topic reads 0, not absent."""

    def __init__(
        self, get_tracker: Callable[[], Tracker | None], *, topics: Iterable[str] = ()
    ) -> None:
        self._get_tracker = get_tracker
        self._topics = tuple(topics)

    def collect(self) -> Iterator[Metric]:
        tracker = self._get_tracker()
        running = tracker is not None and tracker.running
        yield GaugeMetricFamily(
            "tracker_running", "1 while the tracker replica runs.", value=int(running)
        )
        if tracker is None or not running:
            return
        status = tracker.status()
        yield InfoMetricFamily(
            "tracker",
            "The tracker's name, replica id and transport.",
            value={
                "tracker": tracker.name,
                "replica": tracker.replica_id,
                "transport": status["transport"] or "",
            },
        )
        yield _presences(tracker, self._topics)
        yield GaugeMetricFamily(
            "tracker_owned_presences",
            "Presences this replica owns.",
            value=sum(shard["rows"] for shard in status["shards"]),
        )
        yield _peers(tracker)
        yield from _per_shard(status["shards"])
        yield CounterMetricFamily(
            "tracker_publish_failures",
            "Message batches the transport could not publish.",
            value=tracker.publish_failures,
        )
        yield from _health(tracker)


def _health(tracker: Tracker) -> Iterator[Metric]:
    health = tracker.health()
    rejected = CounterMetricFamily(
        "tracker_messages_rejected", "Frames dropped by their checks.", labels=["reason"]
    )
    for reason in REASONS:
        rejected.add_metric([reason], health["rejected"].get(reason, 0))
    yield rejected
    yield CounterMetricFamily(
        "tracker_receive_errors",
        "Valid frames whose application raised (a bug; logged with its traceback).",
        value=health["receive_errors"],
    )
    failures = CounterMetricFamily(
        "tracker_task_failures",
        "Background tasks that failed and were restarted.",
        labels=["task"],
    )
    for task, count in sorted(health["task_failures"].items()):
        failures.add_metric([task], count)
    yield failures
    yield GaugeMetricFamily(
        "tracker_incompatible_peers",
        "Peers refused (other protocol version or shard count) heard within down_period.",
        value=len(tracker.incompatible_peers()),
    )
    yield GaugeMetricFamily(
        "tracker_superseded",
        "1 once a later process of this node name took over.",
        value=int(tracker.superseded_by is not None),
    )
    yield GaugeMetricFamily(
        "tracker_healthy", "1 while the replica finds nothing wrong.", value=int(health["ok"])
    )
    transport = health["transport"] or {}
    for name, field, documentation in (
        ("tracker_transport_reconnects", "reconnects", "Reconnections of the transport."),
        ("tracker_transport_stalls", "stalls", "Reconnections for a silent subscription."),
    ):
        if field in transport:
            yield CounterMetricFamily(name, documentation, value=transport[field])
    if transport.get("last_frame_age") is not None:
        yield GaugeMetricFamily(
            "tracker_transport_last_frame_age_seconds",
            "Seconds since the transport last heard a frame.",
            value=transport["last_frame_age"],
        )


def _presences(tracker: Tracker, topics: tuple[str, ...]) -> GaugeMetricFamily:
    counts = dict.fromkeys(topics, 0)
    for topic in tracker.topics():
        counts[topic] = tracker.count(topic)
    family = GaugeMetricFamily(
        "tracker_presences", "Presences visible on this replica.", labels=["topic"]
    )
    for topic, count in counts.items():
        family.add_metric([topic], count)
    return family


def _peers(tracker: Tracker) -> GaugeMetricFamily:
    statuses = [s for replica, s in tracker.replicas().items() if replica != tracker.replica_id]
    family = GaugeMetricFamily(
        "tracker_peers", "Peer replicas by status (this one not included).", labels=["status"]
    )
    for status in (UP, DOWN):
        family.add_metric([status], statuses.count(status))
    return family


def _per_shard(shards: list[dict[str, Any]]) -> Iterator[Metric]:
    ages = GaugeMetricFamily(
        "tracker_peer_heartbeat_age_seconds",
        "Seconds since a peer was last heard.",
        labels=["shard", "replica"],
    )
    for shard in shards:
        for replica, peer in shard["peers"].items():
            if peer["last_heartbeat_age"] is not None:
                ages.add_metric([str(shard["index"]), replica], peer["last_heartbeat_age"])
    yield ages
    for name, documentation, field in _SHARD_COUNTERS:
        counter = CounterMetricFamily(name, documentation, labels=["shard"])
        for shard in shards:
            counter.add_metric([str(shard["index"])], shard["stats"][field])
        yield counter
    for name, documentation, count, seconds in _SHARD_SUMMARIES:
        summary = SummaryMetricFamily(name, documentation, labels=["shard"])
        for shard in shards:
            stats = shard["stats"]
            summary.add_metric([str(shard["index"])], stats[count], stats[seconds])
        yield summary
