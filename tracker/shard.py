"""The imperative shell around one `State`: heartbeats, transfers, peer liveness.

A shard owns one State (one replica of one slice of the topics). It does no I/O itself:
it hands encoded frames to `send` (the tracker's ordered outbox) and reports visible
changes to `emit`, in the order they happen. Everything here runs on the event loop,
synchronously, so reads of the state are never queued behind writes.

Timing, per shard:
- A local change after a quiet period is broadcast at once (the next loop iteration);
  changes within `broadcast_period` of the last heartbeat wait for the next one, so a
  burst costs one message per period.
- A replica with nothing to say sends an empty heartbeat every `max_silent_periods`.
- Each heartbeat carries the sender's clock; a receiver that finds itself behind (a lost
  or reordered message) asks the sender for a transfer, and asks again every
  `clock_sample_periods` while it stays behind.
- A peer silent for `down_period` is down (rows hidden), for `permdown_period` gone
  (rows purged). A goodbye purges at once.

Incarnations. A node name (`TRACKER_NODE_NAME`) is one live process; a restarted process
comes back under a new replica id with the same name and replaces its predecessor at once.
Which of two is the newer is decided without wall clocks: every heartbeat and transfer
carries the sender's age (seconds since it started, by its own monotonic clock), and a
receiver estimates the sender's start on its own clock as `now - age`. A message's delay
only makes that estimate later, never earlier, so:
- peers take the incarnation that looks newer at once (a restart replaces the dead
  predecessor without waiting for down detection);
- an incarnation that finds one of its own node name provably older (estimated start,
  the latest it can be, before its own) tells it so (`superseded`); the older one says
  goodbye (every peer drops its rows and admits the newer one if it had not) and then
  says nothing more, reporting itself degraded. Delays can postpone this proof, never
  fake it, so a predecessor that keeps talking cannot flip-flop the rows, and a live
  successor is never ignored for ever, whatever the hosts' clocks say.

Every frame is checked in full (`wire.Codec.decode`) before anything changes; a bad one is
counted by reason and dropped. Peers whose frames are valid but incompatible (another
protocol version, another shard count) are refused and listed in `incompatible`.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import wire
from .conf import TrackerOptions
from .deltas import Listing, Presence, Rows
from .state import UP, NotTracked, State

logger = logging.getLogger("tracker")

Send = Callable[[int, "str | None", bytes], None]  # (shard, to replica or None, payload)
Emit = Callable[[list[Presence], list[Presence]], None]

# A rejected frame is logged at most once per reason in this many seconds (a flood of
# foreign frames must not flood the log); the counters count every one.
REJECT_LOG_INTERVAL = 10.0


def node_name_of(replica: str) -> str:
    """The stable part of a replica id `name:random` (the name may contain ':')."""
    return replica.rsplit(":", 1)[0]


@dataclass
class ShardStats:
    heartbeats_sent: int = 0
    heartbeats_received: int = 0
    transfers_requested: int = 0
    transfers_sent: int = 0
    transfers_received: int = 0
    full_transfers_sent: int = 0
    merges: int = 0
    merge_seconds: float = 0.0
    extracts: int = 0
    extract_seconds: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0


class Shard:
    def __init__(
        self,
        index: int,
        replica: str,
        options: TrackerOptions,
        send: Send,
        emit: Emit,
        *,
        observer: bool = False,
        codec: wire.Codec | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_superseded: Callable[[str], None] = lambda successor: None,
    ) -> None:
        self.index = index
        self.options = options
        self._state = State(replica, options.max_delta_sizes)
        self.observer = observer  # an observer tracks nothing and is not listed by peers
        self.codec = codec or wire.Codec()
        self._send = send
        self._emit = emit
        self._now = clock
        self._on_superseded = on_superseded
        self.born = clock()  # our start, on our own clock: our age goes in every heartbeat
        self.last_heard: dict[str, float] = {}
        self._requested: dict[str, float] = {}  # peer -> when we last asked it for a transfer
        self._gone: set[str] = set()  # said goodbye: never again
        self._by_name: dict[str, str] = {}  # node name -> its current replica id
        # replica -> the earliest estimate of its start on our clock (each message's delay
        # only makes an estimate later), for peers and for replicas of our own node name
        self._started: dict[str, float] = {}
        self._rivals: dict[str, float] = {}
        self._told: dict[str, float] = {}  # rival -> when we last told it it is superseded
        self._ignored: set[str] = set()  # older incarnations we ignore (logged once each)
        self.rejected: Counter[str] = Counter()  # frames dropped, by reason
        self._reject_logged: dict[str, float] = {}
        # Peers refused as incompatible: replica (or "?") -> (what differs, when last heard).
        self.incompatible: dict[str, tuple[str, float]] = {}
        self._last_sent = float("-inf")
        self._flush_handle: asyncio.Handle | asyncio.TimerHandle | None = None
        self._ticks = 0
        self.stats = ShardStats()

    @property
    def replica(self) -> str:
        return self._state.replica

    # -- local operations ----------------------------------------------------------------

    def track(self, conn: str, topic: str, key: str, meta: dict[str, Any]) -> Presence:
        """Track a row of ours (raises AlreadyTracked); peers hear of it soon."""
        row = self._state.join(conn, topic, key, meta)
        self._emit([row], [])
        self.changed()
        return row

    def update(self, conn: str, topic: str, key: str, meta: dict[str, Any]) -> Presence:
        """Replace a row's meta (raises NotTracked); returns the new row."""
        joins, leaves = self._state.update(conn, topic, key, meta)
        self._emit(joins, leaves)
        self.changed()
        return joins[0]

    def untrack(self, conn: str, topic: str, key: str) -> Presence | None:
        """Stop tracking a row; None if it was not tracked."""
        try:
            row = self._state.leave(conn, topic, key)
        except NotTracked:
            return None
        self._emit([], [row])
        self.changed()
        return row

    def untrack_conn(self, conn: str) -> Rows:
        """Stop tracking every row of `conn` on this shard."""
        rows = self._state.leave_conn(conn)
        if rows:
            self._emit([], rows)
            self.changed()
        return rows

    # -- reads (local memory) ------------------------------------------------------------

    @property
    def clock(self) -> int:
        return self._state.clock

    def list(self, topic: str) -> Listing:
        return self._state.list(topic)

    def get_by_key(self, topic: str, key: str) -> Listing:
        return self._state.get_by_key(topic, key)

    def rows(self, topic: str) -> Rows:
        return self._state.rows(topic)

    def by_key(self, topic: str) -> dict[str, Rows]:
        return self._state.by_key(topic)

    def count(self, topic: str) -> int:
        return self._state.count(topic)

    def topics(self) -> builtins.list[str]:
        return self._state.topics()

    def owned(self) -> int:
        """How many rows we track ourselves."""
        return self._state.held(self.replica)

    def replicas(self) -> dict[str, str]:
        """Every peer known to this shard, and its status."""
        return self._state.replicas()

    def catching_up(self) -> bool:
        """Whether we still lack dots that a peer that is up has announced."""
        state = self._state
        return any(state.behind(p) for p, status in state.replicas().items() if status == UP)

    # -- local changes -------------------------------------------------------------------

    def changed(self) -> None:
        """A local change happened: make sure a heartbeat carries it soon."""
        if self._flush_handle is not None:
            return
        loop = asyncio.get_running_loop()
        due = self._last_sent + self.options.broadcast_period
        wait = due - self._now()
        if wait <= 0:
            self._flush_handle = loop.call_soon(self.flush)
        else:
            self._flush_handle = loop.call_later(wait, self.flush, due)

    def flush(self, due: float | None = None) -> None:
        """Broadcast our pending delta (possibly empty) as a heartbeat. `due`: when the timer
        that calls it was set to fire."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        delta = self._state.take_delta()
        # A timer fires a little late (asyncio rounds its wait up to whole milliseconds):
        # count the next period from when it was due, so that under steady changes a
        # heartbeat goes out every period, not every period plus the lateness.
        now = self._now()
        self._last_sent = now if due is None else min(now, due)
        self.stats.heartbeats_sent += 1
        self._out(None, self._encode_delta(wire.HEARTBEAT, delta))

    def _encode_delta(self, kind: str, delta: Any) -> bytes:
        return self.codec.encode_delta(
            kind,
            delta,
            age=self._now() - self.born,
            shards=self.options.pool_size,
            observer=self.observer,
        )

    def _out(self, to: str | None, payload: bytes) -> None:
        self.stats.bytes_sent += len(payload)
        self._send(self.index, to, payload)

    # -- periodic work -------------------------------------------------------------------

    def tick(self) -> None:
        """Called every broadcast_period."""
        now = self._now()
        options = self.options
        if self._flush_handle is None and (
            self._state.has_pending_delta
            or now - self._last_sent >= options.silent_heartbeat_interval - 1e-9
        ):
            self.flush()
        for peer, heard in list(self.last_heard.items()):
            silent = now - heard
            if silent >= options.permdown_period:
                logger.info("replica %s permanently down (silent %.1f s)", peer, silent)
                self._forget(peer)
            elif silent >= options.down_period and self._state.status_of(peer) == UP:
                logger.warning("replica %s down (silent %.1f s)", peer, silent)
                self._emit([], self._state.replica_down(peer))
        for peer, (_, heard) in list(self.incompatible.items()):
            if now - heard >= options.permdown_period:
                del self.incompatible[peer]
        self._ticks += 1
        if self._ticks % options.clock_sample_periods == 0:
            for peer, status in self._state.replicas().items():
                if status == UP and self._state.behind(peer):
                    self.request_transfer(peer)

    def request_transfer(self, peer: str, *, force: bool = False) -> None:
        now = self._now()
        asked = self._requested.get(peer)
        if not force and asked is not None and now - asked < self.options.clock_sample_interval:
            return  # an answer is probably on its way
        self._requested[peer] = now
        self.stats.transfers_requested += 1
        since = self._state.seen_up_to(peer)
        self._out(peer, self.codec.encode_request(self.replica, since))

    def reconnected(self) -> None:
        """The transport lost messages for a while: announce ourselves and catch up."""
        self.flush()
        for peer in self._state.replicas():
            self.request_transfer(peer, force=True)

    def goodbye(self) -> None:
        """Flush what is pending, then tell peers to purge our rows now."""
        self.flush()
        self._out(None, self.codec.encode_goodbye(self.replica))

    # -- incoming messages ---------------------------------------------------------------

    def receive(self, payload: bytes) -> None:
        """Apply one frame from the transport; a frame that fails its checks changes
        nothing and is counted. (An exception from here is a bug, not a bad frame.)"""
        self.stats.bytes_received += len(payload)
        try:
            message = self.codec.decode(payload)
        except wire.Rejected as rejected:
            self._reject(rejected)
            return
        sender = message.sender
        if sender == self.replica or sender in self._gone:
            return
        if isinstance(message, wire.DeltaMessage):
            if message.shards != self.options.pool_size:
                what = f"has {message.shards} shards, we have {self.options.pool_size}"
                self._reject(wire.Rejected(wire.INCOMPATIBLE, what, sender))
                return
            if message.kind == wire.HEARTBEAT:
                self._on_heartbeat(message)
            else:
                self._on_transfer(message)
        elif isinstance(message, wire.TransferRequest):
            self._send_transfer(sender, message.since)
        elif isinstance(message, wire.Superseded):
            if node_name_of(sender) == node_name_of(self.replica) and not self.observer:
                self._on_superseded(sender)
        else:
            logger.info("replica %s said goodbye", sender)
            self._forget(sender, for_good=True)

    def receive_foreign(self, payload: bytes, shard: int) -> None:
        """A frame on shard `shard`, which we do not have: its sender has more shards (its
        heartbeats on shard 0 say how many)."""
        try:
            sender: str | None = self.codec.decode(payload).sender
        except wire.Rejected as rejected:
            sender = rejected.peer
        what = f"has more than {shard} shards, we have {self.options.pool_size}"
        self._reject(wire.Rejected(wire.INCOMPATIBLE, what, sender), keep_detail=True)

    def _reject(self, rejected: wire.Rejected, *, keep_detail: bool = False) -> None:
        reason = rejected.reason
        self.rejected[reason] += 1
        now = self._now()
        if reason in (wire.VERSION_MISMATCH, wire.INCOMPATIBLE):
            peer = rejected.peer or "?"
            known = self.incompatible.get(peer)
            if known is None:
                logger.error(
                    "tracker peer %s refused: it %s; it cannot join this cluster "
                    "(docs/protocol.md, rolling deploys)",
                    peer,
                    rejected.detail,
                )
            detail = known[0] if known is not None and keep_detail else rejected.detail
            self.incompatible[peer] = (detail, now)
            return
        if now - self._reject_logged.get(reason, float("-inf")) >= REJECT_LOG_INTERVAL:
            self._reject_logged[reason] = now
            logger.warning(
                "tracker frame rejected (%s): %s%s; %d rejected for this reason so far",
                reason,
                rejected.detail,
                f" (from {rejected.peer})" if rejected.peer else "",
                self.rejected[reason],
            )

    def _on_heartbeat(self, message: wire.DeltaMessage) -> None:
        self.stats.heartbeats_received += 1
        sender = message.sender
        if message.observer:
            self._send_transfer(sender, 0)  # an observer reads the cluster: give it our rows
            return
        if self._state.status_of(sender) is None:
            if not self._welcome(sender, message.age):
                return
            if not self.observer:
                # Greet the newcomer with our rows, to it alone: one message instead of a
                # broadcast heartbeat that every replica would receive.
                self._send_transfer(sender, 0)
        self._merge(message)

    def _on_transfer(self, message: wire.DeltaMessage) -> None:
        sender = message.sender
        self._requested.pop(sender, None)
        self.stats.transfers_received += 1
        if self._state.status_of(sender) is None:
            # A greeting from a replica we have not heard yet, or an observer's empty answer.
            if message.observer or not self._welcome(sender, message.age):
                return
        self._merge(message)

    def _welcome(self, sender: str, age: float) -> bool:
        """Admit a replica heard for the first time, unless an incarnation of its node that
        looks newer is known: a node name is one live process, the one started last."""
        started = self._now() - age
        name = node_name_of(sender)
        if name == node_name_of(self.replica) and not self.observer:
            self._rival(sender, started)
            return False
        current = self._by_name.get(name)
        if current is not None and current != sender:
            # Equal estimates (no delay, same instant) are ordered by id, the same everywhere.
            if (started, sender) < (self._started[current], current):
                self._ignore(sender, current)
                return False
            logger.info("replica %s replaced by %s", current, sender)
            self._forget(current)
        self._by_name[name] = sender
        self._started[sender] = started
        self._ignored.discard(sender)
        logger.info("replica %s up", sender)
        return True

    def _rival(self, sender: str, started: float) -> None:
        """Another replica of our own node name: if it provably started before us, tell it
        (at most once per clock sample interval) that it is superseded."""
        started = min(started, self._rivals.get(sender, started))
        self._rivals[sender] = started
        if (started, sender) >= (self.born, self.replica):
            self._ignore(sender, self.replica, proven=False)
            return
        self._ignore(sender, self.replica)
        now = self._now()
        if now - self._told.get(sender, float("-inf")) >= self.options.clock_sample_interval:
            self._told[sender] = now
            self._out(sender, self.codec.encode_superseded(self.replica))

    def _ignore(self, older: str, newer: str, *, proven: bool = True) -> None:
        if older not in self._ignored:
            self._ignored.add(older)
            if proven:
                logger.warning(
                    "ignoring replica %s: %s, a later start of node %s, replaces it",
                    older,
                    newer,
                    node_name_of(newer),
                )
            else:
                logger.warning(
                    "replica %s of our node name %s is running; ignoring it until one of us "
                    "learns which started first",
                    older,
                    node_name_of(newer),
                )

    def _merge(self, message: wire.DeltaMessage) -> None:
        sender = message.sender
        now = self.last_heard[sender] = self._now()
        self._started[sender] = min(self._started[sender], now - message.age)
        if self._state.status_of(sender) not in (None, UP):
            logger.warning("replica %s up again", sender)
        started = time.perf_counter()
        joins, leaves = self._state.merge(message.delta)
        self.stats.merges += 1
        self.stats.merge_seconds += time.perf_counter() - started
        if joins or leaves:
            self._emit(joins, leaves)
        if self._state.behind(sender):
            self.request_transfer(sender)

    def _send_transfer(self, to: str, since: int) -> None:
        """What `to`, having our dots up to `since`, lacks: a delta or our full state."""
        started = time.perf_counter()
        if since > 0 and not self._state.delta_covers(since):
            self.stats.full_transfers_sent += 1
        delta = self._state.extract(since)
        self.stats.extracts += 1
        self.stats.extract_seconds += time.perf_counter() - started
        self.stats.transfers_sent += 1
        self._out(to, self._encode_delta(wire.TRANSFER, delta))

    def _forget(self, peer: str, *, for_good: bool = False) -> None:
        self._emit([], self._state.replica_permdown(peer))
        self.last_heard.pop(peer, None)
        self._requested.pop(peer, None)
        self._started.pop(peer, None)
        self._rivals.pop(peer, None)
        if self._by_name.get(node_name_of(peer)) == peer:
            del self._by_name[node_name_of(peer)]
        if for_good:
            self._gone.add(peer)

    # -- status --------------------------------------------------------------------------

    def peers(self) -> dict[str, dict[str, Any]]:
        """Per known peer: status, announced clock, what we hold, seconds since heard."""
        now = self._now()
        state = self._state
        return {
            peer: {
                "status": status,
                "clock": state.announced(peer),
                "seen": state.seen_up_to(peer),
                "rows": state.held(peer),
                "last_heartbeat_age": round(now - self.last_heard[peer], 3)
                if peer in self.last_heard
                else None,
            }
            for peer, status in state.replicas().items()
        }

    def recent_incompatible(self, within: float) -> dict[str, str]:
        """Peers refused as incompatible that were heard within `within` seconds."""
        now = self._now()
        return {
            peer: what for peer, (what, heard) in self.incompatible.items() if now - heard < within
        }

    def cancel(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
