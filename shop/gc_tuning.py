"""The cyclic garbage collector of a server process: short pauses however many sockets it
holds (issue 9), and the pauses measured for `/metrics`.

Why: CPython 3.11's full collection walks every object the collector tracks in its three
generations. A daphne process holding 5,000 sockets tracks over a million objects (each
socket's protocol objects, consumer and tracker row), and with Python's defaults a full
pass over them stops the process for seconds (bench/README.md): longer than
`TRACKER_DOWN_PERIOD`, so peers take the node for down, and longer than daphne's
handshake timeout, so connects fail. Higher thresholds make full passes rarer, not
shorter.

The policy, on by default (`GC_TUNING`; `apply()` runs once the server runs, from the
site's start-up hook in `shop/asgi.py`):

1. `gc.set_threshold(*GC_THRESHOLD)`.
2. `gc.collect()` then `gc.freeze()`: the start-up heap (Django, the apps, the tracker)
   moves to the permanent generation, which no collection walks again.
3. After a full collection its survivors are frozen too: what survived it is long-lived
   (held sockets, tracker rows, caches), and the next full pass walks only what was
   allocated since. Its length then follows the thresholds (how much is allocated between
   full passes), not the size of the heap.
4. Frozen objects are still freed by reference counting when they die, but a reference
   cycle among them is never collected. So a freeze must not catch objects that will end
   in cycles:
   - work in flight: an HTTP request's objects are full of cycles (Django's request and
     its lazy user, prefetched model instances, a database wrapper per request). The
     site's ASGI module counts the requests in flight (`counting_requests`); a full pass
     that ends while one is in flight is not followed by a freeze, and when the last one
     finishes, one full pass runs then and is (the freeze is "owed"). A node never without
     a request in flight freezes anyway after FORCE_AFTER owed passes, so that its passes
     stay short.
   - a closed socket: our consumers leave no cycle; daphne leaves two per websocket (its
     upgrade request and HTTP channel refer to each other, and autobahn's `is_closed`
     Deferred holds the protocol), which `apply()` breaks when the connection is lost. A
     closed socket's objects are then freed at once, frozen or not
     (tests/cluster/test_gc_tuning.py proves it in a real daphne).
   What can still be caught (the in-flight work of a socket, a Redis connection closed
   later) is a few objects per freeze: `gc_frozen_objects` shows whether it adds up.

Off, Python's defaults are left alone. On or off, the length of every collection is
recorded (`gc.callbacks`, two clock reads per collection) and served by `GCCollector`.
"""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric

# Upper bounds (seconds) of the pause histogram's buckets; +Inf is added.
PAUSE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
GENERATIONS = 3
FULL = GENERATIONS - 1
# Full passes that may end with HTTP requests in flight before their survivors are frozen
# all the same: each owed pass walks what the previous ones kept.
FORCE_AFTER = 4

# An ASGI application, as Django's handler types it.
ASGIApp = Callable[
    [
        dict[str, Any],
        Callable[[], Awaitable[Mapping[str, Any]]],
        Callable[[Mapping[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]


class _Collector:
    """What the policy knows and does, from the collector's callback.

    The callback runs in whichever thread triggered the collection, possibly one that
    holds some lock, so it takes none: it only does arithmetic on these attributes
    (collections never overlap; `in_flight` is changed on the event loop only)."""

    def __init__(
        self,
        freeze: Callable[[], None] = gc.freeze,
        collect: Callable[[], object] = gc.collect,
    ) -> None:
        self._freeze, self._collect = freeze, collect
        self.applied = False
        self.tuning = False
        self.in_flight = 0  # HTTP requests
        self.owed = 0  # full passes since the last freeze, not frozen for requests in flight
        self.freezes = {"start-up": 0, "quiet": 0, "forced": 0}
        # Per generation: collections, their total and longest seconds, bucket counts.
        self.count = [0] * GENERATIONS
        self.total = [0.0] * GENERATIONS
        self.longest = [0.0] * GENERATIONS
        self.buckets = [[0] * len(PAUSE_BUCKETS) for _ in range(GENERATIONS)]
        self._started = 0.0

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        generation = info["generation"]
        self.count[generation] += 1
        self.total[generation] += took
        self.longest[generation] = max(self.longest[generation], took)
        for i, bound in enumerate(PAUSE_BUCKETS):
            if took <= bound:
                self.buckets[generation][i] += 1
                break
        if generation == FULL and self.tuning:
            if self.in_flight == 0:
                self.freeze("quiet")
            elif self.owed + 1 >= FORCE_AFTER:
                self.freeze("forced")
            else:
                self.owed += 1

    def freeze(self, when: str) -> None:
        self._freeze()
        self.freezes[when] += 1
        self.owed = 0

    def request_started(self) -> None:
        self.in_flight += 1

    def request_finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self.owed:
            self._collect()  # the pass the freeze is owed to: it ends quiet, so it freezes


COLLECTOR = _Collector()


def apply(*, tuning: bool, threshold: tuple[int, int, int]) -> None:
    """Install the policy in this server process (once; later calls do nothing).
    `tuning` False: only record pauses, leaving the collector as Python configured it."""
    if COLLECTOR.applied:
        return
    COLLECTOR.applied = True
    gc.callbacks.append(COLLECTOR.on_gc)
    if not tuning:
        return
    _break_daphne_cycles()
    gc.set_threshold(*threshold)
    gc.collect()
    COLLECTOR.freeze("start-up")
    COLLECTOR.tuning = True


def counting_requests(app: ASGIApp, collector: _Collector = COLLECTOR) -> ASGIApp:
    """The site's HTTP application, counting the requests in flight for the policy."""

    async def counted(
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[Mapping[str, Any]]],
        send: Callable[[Mapping[str, Any]], Awaitable[None]],
    ) -> None:
        collector.request_started()
        try:
            await app(scope, receive, send)
        finally:
            collector.request_finished()

    return counted


def _break_daphne_cycles() -> None:
    """Make daphne's websocket objects free themselves by reference counting when the
    connection is lost (see the module's docstring, point 4)."""
    from daphne.ws_protocol import WebSocketProtocol
    from twisted.web.http import HTTPChannel

    made, lost = WebSocketProtocol.connectionMade, WebSocketProtocol.connectionLost

    def connectionMade(self: WebSocketProtocol) -> None:
        # At the upgrade daphne hands the TCP connection from its HTTP channel to this
        # protocol; the channel stays the transport's producer until the connection ends.
        producer = getattr(self.transport, "producer", None)
        self._upgraded_from = weakref.ref(producer) if isinstance(producer, HTTPChannel) else None
        made(self)

    def connectionLost(self: WebSocketProtocol, reason: Any) -> None:
        try:
            lost(self, reason)
        finally:
            channel = self._upgraded_from() if self._upgraded_from is not None else None
            if channel is not None:
                for request in channel.requests:  # the upgrade request: request.channel
                    request.channel = None
                channel.requests.clear()
            closed = getattr(self, "is_closed", None)
            if closed is not None and closed.called and closed.result is self:
                closed.result = None  # autobahn resolves it with the protocol itself

    WebSocketProtocol._upgraded_from = None
    WebSocketProtocol.connectionMade = connectionMade
    WebSocketProtocol.connectionLost = connectionLost


class GCCollector:
    """Prometheus families of this process's collector (register it in a registry):

    - gc_tuning: 1 when the site's policy is applied (GC_TUNING on), else 0.
    - gc_threshold{generation}: the collector's thresholds now (gc.get_threshold()).
    - gc_frozen_objects: objects in the permanent generation (gc.get_freeze_count()).
    - gc_freezes_total{when}: freezes by the policy: at start-up, after a full collection
      that ended with no HTTP request in flight ("quiet") or after FORCE_AFTER that did
      not ("forced").
    - gc_pause_seconds{generation}: histogram of the length of each collection (wall
      clock); full collections are generation 2. Recorded from the site's start-up on.
    - gc_pause_max_seconds{generation}: the longest collection so far.
    - gc_uncollectable_objects_total{generation}: gc.get_stats()' uncollectable.
    """

    def collect(self) -> Iterator[Metric]:
        c = COLLECTOR
        yield GaugeMetricFamily(
            "gc_tuning", "1 when the site's GC policy is applied (GC_TUNING).",
            value=1 if c.tuning else 0,
        )  # fmt: skip
        thresholds = GaugeMetricFamily(
            "gc_threshold", "The cyclic collector's thresholds.", labels=["generation"]
        )
        for generation, value in enumerate(gc.get_threshold()):
            thresholds.add_metric([str(generation)], value)
        yield thresholds
        yield GaugeMetricFamily(
            "gc_frozen_objects", "Objects in the permanent generation (never collected).",
            value=gc.get_freeze_count(),
        )  # fmt: skip
        freezes = CounterMetricFamily(
            "gc_freezes", "gc.freeze() calls by the site's GC policy.", labels=["when"]
        )
        for when, count in c.freezes.items():
            freezes.add_metric([when], count)
        yield freezes
        pauses = HistogramMetricFamily(
            "gc_pause_seconds", "Length of each cyclic collection.", labels=["generation"]
        )
        longest = GaugeMetricFamily(
            "gc_pause_max_seconds", "The longest cyclic collection so far.",
            labels=["generation"],
        )  # fmt: skip
        uncollectable = CounterMetricFamily(
            "gc_uncollectable_objects", "Objects the collector found but could not free.",
            labels=["generation"],
        )  # fmt: skip
        stats = gc.get_stats()
        for generation in range(GENERATIONS):
            label = [str(generation)]
            cumulative, buckets = 0, []
            for bound, count in zip(PAUSE_BUCKETS, c.buckets[generation], strict=True):
                cumulative += count
                buckets.append((repr(bound), cumulative))
            buckets.append(("+Inf", c.count[generation]))
            pauses.add_metric(label, buckets, c.total[generation])
            longest.add_metric(label, c.longest[generation])
            uncollectable.add_metric(label, stats[generation]["uncollectable"])
        yield pauses
        yield longest
        yield uncollectable
