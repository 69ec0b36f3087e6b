"""The imperative shell around one `State`: heartbeats, transfers, peer liveness.

A shard owns one State (one replica of one slice of the topics). It does no I/O itself:
it hands encoded messages to `send` (the tracker's ordered outbox) and reports visible
changes to `emit`. Everything here runs on the event loop, synchronously, so reads of the
state are never queued behind writes.

Timing, per shard:
- A local change after a quiet period is broadcast at once (the next loop iteration);
  changes within `broadcast_period` of the last heartbeat wait for the next one, so a
  burst costs one message per period.
- A replica with nothing to say sends an empty heartbeat every `max_silent_periods`.
- Each heartbeat carries the sender's clock; a receiver that finds itself behind (a lost
  or reordered message) asks the sender for a transfer, and asks again every
  `clock_sample_periods` while it stays behind.
- A peer silent for `down_period` is down (rows hidden), for `permdown_period` gone
  (rows purged). A goodbye purges at once, and so does a new replica id with the same
  node name (the process was replaced).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import wire
from .conf import TrackerOptions
from .deltas import Presence
from .state import DOWN, UP, State

logger = logging.getLogger("tracker")

Send = Callable[[int, "str | None", bytes], None]  # (shard, to replica or None, payload)
Emit = Callable[[list[Presence], list[Presence]], None]


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
    undecodable: int = 0


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
        started_at: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.index = index
        self.options = options
        self.state = State(replica, options.max_delta_sizes)
        self.observer = observer  # an observer tracks nothing and is not listed by peers
        self.started_at = started_at  # unix time; orders replicas sharing a node name
        self._send = send
        self._emit = emit
        self._now = clock
        self.last_heard: dict[str, float] = {}
        self._requested: dict[str, float] = {}  # peer -> when we last asked it for a transfer
        self._gone: set[str] = set()  # said goodbye or were replaced: never again
        self._by_name: dict[str, str] = {}  # node name -> its current replica id
        self._started: dict[str, float] = {}  # replica -> its announced start time
        self._last_sent = float("-inf")
        self._flush_handle: asyncio.Handle | asyncio.TimerHandle | None = None
        self._ticks = 0
        self.stats = ShardStats()

    @property
    def replica(self) -> str:
        return self.state.replica

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
        delta = self.state.take_delta()
        payload = wire.encode_delta(
            wire.HEARTBEAT, delta, observer=self.observer, started=self.started_at
        )
        # A timer fires a little late (asyncio rounds its wait up to whole milliseconds):
        # count the next period from when it was due, so that under steady changes a
        # heartbeat goes out every period, not every period plus the lateness.
        now = self._now()
        self._last_sent = now if due is None else min(now, due)
        self.stats.heartbeats_sent += 1
        self._out(None, payload)

    def _out(self, to: str | None, payload: bytes) -> None:
        self.stats.bytes_sent += len(payload)
        self._send(self.index, to, payload)

    # -- periodic work -------------------------------------------------------------------

    def tick(self) -> None:
        """Called every broadcast_period."""
        now = self._now()
        options = self.options
        if self._flush_handle is None and (
            self.state.has_pending_delta
            or now - self._last_sent >= options.silent_heartbeat_interval - 1e-9
        ):
            self.flush()
        for peer, heard in list(self.last_heard.items()):
            silent = now - heard
            if silent >= options.permdown_period:
                logger.info("replica %s permanently down (silent %.1f s)", peer, silent)
                self._forget(peer)
            elif silent >= options.down_period and self.state.replicas.get(peer) == UP:
                logger.warning("replica %s down (silent %.1f s)", peer, silent)
                self._emit([], self.state.replica_down(peer))
        self._ticks += 1
        if self._ticks % options.clock_sample_periods == 0:
            for peer, status in self.state.replicas.items():
                if status == UP and self.state.behind(peer):
                    self.request_transfer(peer)

    def request_transfer(self, peer: str, *, force: bool = False) -> None:
        now = self._now()
        asked = self._requested.get(peer)
        if not force and asked is not None and now - asked < self.options.clock_sample_interval:
            return  # an answer is probably on its way
        self._requested[peer] = now
        self.stats.transfers_requested += 1
        since = self.state.seen[peer].contiguous if peer in self.state.seen else 0
        self._out(peer, wire.encode_request(self.replica, since))

    def reconnected(self) -> None:
        """The transport lost messages for a while: announce ourselves and catch up."""
        self.flush()
        for peer in list(self.state.replicas):
            self.request_transfer(peer, force=True)

    def goodbye(self) -> None:
        """Flush what is pending, then tell peers to purge our rows now."""
        self.flush()
        self._out(None, wire.encode_goodbye(self.replica))

    # -- incoming messages ---------------------------------------------------------------

    def receive(self, payload: bytes) -> None:
        self.stats.bytes_received += len(payload)
        try:
            message = wire.decode(payload)
            sender = message["r"]
            kind = message["t"]
            if sender == self.replica or sender in self._gone:
                return
            if kind == wire.HEARTBEAT:
                self._on_heartbeat(sender, message)
            elif kind == wire.TRANSFER:
                self._on_transfer(sender, message)
            elif kind == wire.TRANSFER_REQUEST:
                self._on_transfer_request(sender, message["s"])
            elif kind == wire.GOODBYE:
                logger.info("replica %s said goodbye", sender)
                self._forget(sender, for_good=True)
        except (ValueError, KeyError, TypeError) as error:
            self.stats.undecodable += 1
            logger.warning("ignored an undecodable tracker message: %s", error)

    def _on_heartbeat(self, sender: str, message: dict[str, Any]) -> None:
        self.stats.heartbeats_received += 1
        if message.get("o"):
            self._send_transfer(sender, 0)  # an observer reads the cluster: give it our rows
            return
        if sender not in self.state.replicas:
            if not self._welcome(sender, message.get("st", 0.0)):
                return
            if not self.observer:
                # Greet the newcomer with our rows, to it alone: one message instead of a
                # broadcast heartbeat that every replica would receive.
                self._send_transfer(sender, 0)
        self._merge(sender, message)

    def _on_transfer(self, sender: str, message: dict[str, Any]) -> None:
        self._requested.pop(sender, None)
        self.stats.transfers_received += 1
        if sender not in self.state.replicas:
            # A greeting from a replica we have not heard yet, or an observer's empty answer.
            if message.get("o") or not self._welcome(sender, message.get("st", 0.0)):
                return
        self._merge(sender, message)

    def _welcome(self, sender: str, started: float) -> bool:
        """Admit a replica heard for the first time, unless it is an older incarnation of
        a node whose newer one we know (ourselves included): a node name is one live
        process, and the one started last is it."""
        name = node_name_of(sender)
        if name == node_name_of(self.replica) and not self.observer:
            previous, previous_started = self.replica, self.started_at
        else:
            previous = self._by_name.get(name)
            previous_started = self._started.get(previous, 0.0)
        if previous is not None and previous != sender:
            if (started, sender) < (previous_started, previous):
                logger.warning(
                    "ignoring replica %s: %s is the newer one of node %s", sender, previous, name
                )
                self._gone.add(sender)
                return False
            if previous == self.replica:
                logger.error(
                    "replica %s of our node name %s started after us; peers now "
                    "ignore this replica",
                    sender,
                    name,
                )
                self._gone.add(sender)
                return False
            logger.info("replica %s replaced by %s", previous, sender)
            self._forget(previous, for_good=True)
        self._by_name[name] = sender
        self._started[sender] = started
        logger.info("replica %s up", sender)
        return True

    def _merge(self, sender: str, message: dict[str, Any]) -> None:
        self.last_heard[sender] = self._now()
        started = time.perf_counter()
        if self.state.replicas.get(sender) == DOWN:
            logger.warning("replica %s up again", sender)
        joins = self.state.replica_up(sender)
        more_joins, leaves = self.state.merge(wire.delta_of(message))
        self.stats.merges += 1
        self.stats.merge_seconds += time.perf_counter() - started
        if joins or more_joins or leaves:
            self._emit(joins + more_joins if joins else more_joins, leaves)
        if self.state.behind(sender):
            self.request_transfer(sender)

    def _on_transfer_request(self, sender: str, since: int) -> None:
        self._send_transfer(sender, since)

    def _send_transfer(self, to: str, since: int) -> None:
        """What `to`, having our dots up to `since`, lacks: a delta or our full state."""
        started = time.perf_counter()
        if since > 0 and self.state.generations.covering(since) is None:
            self.stats.full_transfers_sent += 1
        delta = self.state.extract(since)
        self.stats.extracts += 1
        self.stats.extract_seconds += time.perf_counter() - started
        self.stats.transfers_sent += 1
        payload = wire.encode_delta(
            wire.TRANSFER, delta, observer=self.observer, started=self.started_at
        )
        self._out(to, payload)

    def _forget(self, peer: str, *, for_good: bool = False) -> None:
        self._emit([], self.state.replica_permdown(peer))
        self.last_heard.pop(peer, None)
        self._requested.pop(peer, None)
        self._started.pop(peer, None)
        if self._by_name.get(node_name_of(peer)) == peer:
            del self._by_name[node_name_of(peer)]
        if for_good:
            self._gone.add(peer)

    # -- status --------------------------------------------------------------------------

    def peers(self) -> dict[str, dict[str, Any]]:
        """Per known peer: status, announced clock, what we hold, seconds since heard."""
        now = self._now()
        state = self.state
        return {
            peer: {
                "status": status,
                "clock": state.peer_clocks.get(peer, 0),
                "seen": state.seen[peer].contiguous if peer in state.seen else 0,
                "rows": len(state.owned.get(peer, ())),
                "last_heartbeat_age": round(now - self.last_heard[peer], 3)
                if peer in self.last_heard
                else None,
            }
            for peer, status in state.replicas.items()
        }

    def cancel(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
