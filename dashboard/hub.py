"""The per-event-loop glue between this process's tracker and its staff sockets.

One `DashboardHub` per event loop (one per server process in practice) holds an
`Aggregator` fed by the tracker's diffs for the `carts` topic, turns them into at most one
`diff` message per `DASHBOARD_DIFF_INTERVAL` and hands each message to the staff sockets
registered with it: in-process queues, not a channel-layer group, because with
channels-redis a group spans nodes and N nodes would send every staff client N copies. Each
node aggregates its own replica's view, which converges to the cluster's.

Messages put on a subscriber's queue:

- `{"type": "snapshot", "stats": {...}, "history": [[t, shoppers, pages], ...],
  "replicas": {replica_id: "up" | "down"}, "node": replica_id | None, "t": now}`, first;
- `{"type": "diff", "stats": {...}, "t": now}` then, with `"replicas"` (the whole map)
  when it changed; `stats` holds only what changed (see `dashboard.aggregates`);
- `{"type": "stock", "item_id": "<id>"}` when an item's stock level changed (from the
  shop's stock feed, `stock_changed`), in order with the diffs.

`t` and history times are server unix seconds; `history` covers `HISTORY_SECONDS`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from django.conf import settings

from shop.per_loop import PerLoop

from .aggregates import Aggregator

TOPIC = "carts"
HISTORY_SECONDS = 15 * 60
REPLICA_POLL_SECONDS = 1.0  # the tracker reports replica changes only when asked

Message = dict[str, Any]


class _Row(NamedTuple):
    """A current row as `Tracker.presence()` lists it, with what the aggregator reads."""

    key: str
    meta: dict[str, Any]
    ref: str


def _current_rows(tracker: Any) -> list[_Row]:
    return [
        _Row(key, meta, meta["ref"])
        for key, group in tracker.presence(TOPIC).items()
        for meta in group["metas"]
    ]


class DashboardHub:
    """Aggregates, coalesces and fans out; every method runs on the hub's event loop."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.time) -> None:
        self.interval = interval
        self.clock = clock
        self.aggregator = Aggregator()
        self.node: str | None = None
        self.replicas: dict[str, str] = {}
        self._replicas_changed = False
        self._subscribers: set[asyncio.Queue[Message]] = set()
        self._awaiting_snapshot: set[asyncio.Queue[Message]] = set()
        self._history: deque[tuple[float, int, int]] = deque([(clock(), 0, 0)])
        self._flush_handle: asyncio.Handle | None = None
        self._last_flush = float("-inf")  # loop time
        self._detach: Callable[[], None] | None = None

    # -- subscribers ---------------------------------------------------------------------

    def register(self) -> asyncio.Queue[Message]:
        """A queue that receives a snapshot, then every diff, until `unregister`.

        While changes are waiting for the next diff, the snapshot waits for that diff too:
        a diff leaves out keys that came back to their value at the previous diff, which a
        snapshot taken in between would have recorded mid-change.
        """
        queue: asyncio.Queue[Message] = asyncio.Queue()
        if self.pending:
            self._awaiting_snapshot.add(queue)
            self._schedule()
        else:
            self._subscribers.add(queue)
            queue.put_nowait(self._snapshot())
        return queue

    def unregister(self, queue: asyncio.Queue[Message]) -> None:
        self._subscribers.discard(queue)
        self._awaiting_snapshot.discard(queue)

    @property
    def pending(self) -> bool:
        """Whether changes are waiting for the next diff."""
        return self.aggregator.pending or self._replicas_changed

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers) + len(self._awaiting_snapshot)

    # -- input ---------------------------------------------------------------------------

    def feed(self, diff: dict[str, tuple[list[Any], list[Any]]]) -> None:
        """The tracker's diff callback: `{topic: (joins, leaves)}`. Never blocks."""
        changes = diff.get(TOPIC)
        if changes is None:
            return
        joins, leaves = changes
        if joins or leaves:
            self.aggregator.apply(joins, leaves)
            self._schedule()

    def stock_changed(self, item_id: int) -> None:
        """The shop's stock feed: an item's stock level changed. Its staff message (with the
        item's stock, read when it is sent) follows whatever was queued before."""
        message: Message = {"type": "stock", "item_id": str(item_id)}
        for queue in self._subscribers:
            queue.put_nowait(message)

    def set_replicas(self, replicas: dict[str, str]) -> None:
        """The tracker's replicas and their status, sent in the next diff if they changed."""
        if replicas != self.replicas:
            self.replicas = dict(replicas)
            self._replicas_changed = True
            self._schedule()

    # -- output --------------------------------------------------------------------------

    def _schedule(self) -> None:
        if self._flush_handle is not None:
            return
        loop = asyncio.get_running_loop()
        # A change after a quiet spell goes out at once (once the current task yields,
        # so a burst still coalesces); later ones wait until an interval has passed.
        delay = self._last_flush + self.interval - loop.time()
        if delay > 0:
            self._flush_handle = loop.call_later(delay, self._flush)
        else:
            self._flush_handle = loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Send what changed since the last diff, then any snapshots that were waiting."""
        self._flush_handle = None
        self._last_flush = asyncio.get_running_loop().time()
        stats = self.aggregator.take_diff()
        now = self.clock()
        if stats is not None or self._replicas_changed:
            message: Message = {"type": "diff", "stats": stats or {}, "t": now}
            if self._replicas_changed:
                message["replicas"] = dict(self.replicas)
                self._replicas_changed = False
            if stats is not None and ("shoppers" in stats or "pages" in stats):
                self._record(now)
            for queue in self._subscribers:
                queue.put_nowait(message)
        if self._awaiting_snapshot:
            snapshot = self._snapshot()
            for queue in self._awaiting_snapshot:
                queue.put_nowait(snapshot)
            self._subscribers |= self._awaiting_snapshot
            self._awaiting_snapshot = set()

    def _record(self, now: float) -> None:
        sample = (now, self.aggregator.shoppers, self.aggregator.pages)
        if self._history and int(self._history[-1][0]) == int(now):
            self._history[-1] = sample  # one sample a second is plenty for a 15-minute chart
        else:
            self._history.append(sample)
        # Keep the last sample older than the window: it gives the values at its start.
        while len(self._history) > 1 and self._history[1][0] <= now - HISTORY_SECONDS:
            self._history.popleft()

    def _snapshot(self) -> Message:
        now = self.clock()
        return {
            "type": "snapshot",
            "stats": self.aggregator.snapshot(),
            "history": [list(sample) for sample in self._history],
            "replicas": dict(self.replicas),
            "node": self.node,
            "t": now,
        }

    # -- the process tracker -------------------------------------------------------------

    def attach(self, tracker: Any) -> None:
        """Follow `tracker` (this process's): its current `carts` rows, then its diffs."""
        self.node = tracker.replica_id
        # Subscribing and reading the current rows in one synchronous step loses no change.
        # A change already buffered for earlier subscribers may still reach us after the
        # read: the aggregator ignores a join it has and a leave of a row it never had.
        unsubscribe = tracker.subscribe(self.feed)
        self.feed({TOPIC: (_current_rows(tracker), [])})
        self.set_replicas(tracker.replicas())
        poller = asyncio.get_running_loop().create_task(self._poll_replicas(tracker))

        def detach() -> None:
            unsubscribe()
            poller.cancel()

        self._detach = detach

    async def _poll_replicas(self, tracker: Any) -> None:
        while True:
            await asyncio.sleep(REPLICA_POLL_SECONDS)
            self.set_replicas(tracker.replicas())

    def close(self) -> None:
        """Stop following the tracker and sending diffs."""
        if self._detach is not None:
            self._detach()
            self._detach = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None


async def _start_hub() -> DashboardHub:
    from tracker.process import process_tracker  # started with the server; here if not yet

    tracker = await process_tracker()
    hub = DashboardHub(settings.DASHBOARD_DIFF_INTERVAL)
    hub.attach(tracker)
    return hub


_hub = PerLoop(_start_hub)


async def get_hub() -> DashboardHub:
    """This event loop's hub, following this process's tracker (started on first use)."""
    return await _hub.get()
