"""The `Tracker` facade: the public API over a pool of shards and one transport.

    t = Tracker(name="carts", redis_url=None | "redis://...", broadcast_period=0.2)
    await t.start()
    ref = await t.track(conn, topic, key, meta)
    t.list(topic); t.get_by_key(topic, key); t.presence(topic)
    unsubscribe = t.subscribe(callback)   # callback({topic: (joins, leaves)})
    await t.stop(graceful=True)

Writes change local memory at once and return; replication happens in the background.
Reads are served from local memory. One Tracker is one replica in one event loop.
"""

from __future__ import annotations

import asyncio
import builtins
import gc
import itertools
import logging
import os
import secrets
import socket
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from . import wire
from .conf import TrackerOptions
from .deltas import Grouped, Listing, Rows
from .diffs import Callback, Diff, DiffBuffer, Subscriber
from .shard import Shard
from .state import DOWN, UP
from .transports.base import Outgoing, Transport, TransportUnavailable, cancel_and_wait
from .transports.local import LocalBus, LocalTransport, default_bus

logger = logging.getLogger("tracker")

__all__ = ["Callback", "Diff", "Tracker", "new_replica_id"]

# A background task that fails is restarted after this long (it logged why).
TASK_RESTART_DELAY = 0.5


_instances: dict[str, itertools.count[int]] = {}


def new_replica_id(tracker_name: str, node_name: str | None = None) -> str:
    """`hostname:pid:random`, or `node_name:random`: chosen at start, never reused.

    Peers treat a new id with a known node name as a restart of that node, so further
    trackers of the same name in one process (simulations, tests) get `hostname:pid.N`.
    """
    if node_name is None:
        n = next(_instances.setdefault(tracker_name, itertools.count(1)))
        node_name = f"{socket.gethostname()}:{os.getpid()}" + (f".{n}" if n > 1 else "")
    return f"{node_name}:{secrets.token_hex(4)}"


@contextmanager
def _gc_deferred() -> Iterator[None]:
    """Hold the cyclic garbage collector while a large result is built: every container
    allocated counts towards a collection, and a list of 100k rows would otherwise trigger
    several full passes over the whole heap (most of the time of `list` at 100k). The
    collection still runs afterwards, once."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Tracker:
    def __init__(
        self,
        name: str = "default",
        *,
        redis_url: str | None = None,
        bus: LocalBus | None = None,
        observer: bool = False,
        **options: Any,
    ) -> None:
        if not name or ":" in name:
            raise ValueError("a tracker name must be non-empty and contain no ':'")
        self.name = name
        self.options = TrackerOptions.from_mapping({"redis_url": redis_url, **options})
        if bus is not None and self.options.redis_url:
            raise ValueError("give either redis_url or bus, not both")
        self.observer = observer
        # An observer never takes a server's node name: it would look like that server's
        # successor, and peers would drop the server's rows.
        self.replica_id = new_replica_id(name, None if observer else self.options.node_name)
        self._bus = bus
        self.transport: Transport | None = None
        self.shards: builtins.list[Shard] = []
        self._subscribers: builtins.list[Subscriber] = []
        self._pending = DiffBuffer()
        self._dispatch_handle: asyncio.Handle | None = None
        self._outbox: asyncio.Queue[Outgoing] = asyncio.Queue()
        self._tasks: builtins.list[asyncio.Task[None]] = []
        self._starting: asyncio.Future[None] | None = None
        self.running = False
        self.stopped = False
        self.publish_failures = 0
        self.receive_errors = 0  # frames that passed their checks but raised: bugs
        self.task_failures: Counter[str] = Counter()
        # A later process of our node name runs: we step aside (see tracker.shard).
        self.superseded_by: str | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Join the cluster. Idempotent; concurrent callers wait for the same start.
        Raises TransportUnavailable when Redis cannot be reached."""
        if self.running:
            return
        if self.stopped:
            raise RuntimeError("a stopped tracker cannot restart (its replica id is spent)")
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        try:
            await asyncio.shield(self._starting)
        except BaseException:
            if self._starting.done():
                self._starting = None
            raise

    async def _start(self) -> None:
        if self.options.redis_url:
            from .transports.redis import RedisTransport

            self.transport = RedisTransport(
                self.options.redis_url,
                prefix=self.options.channel_prefix,
                name=self.name,
                pool_size=self.options.pool_size,
                replica=self.replica_id,
                stall_timeout=self.options.stall_timeout,
                command_timeout=self.options.command_timeout,
            )
        else:
            self.transport = LocalTransport(self._bus or default_bus(), self.name, self.replica_id)
        codec = wire.Codec(self.options.secret)
        clock = asyncio.get_running_loop().time  # the clock its timers run on
        self.shards = [
            Shard(
                i,
                self.replica_id,
                self.options,
                self._send,
                self._emit,
                observer=self.observer,
                codec=codec,
                clock=clock,
                on_superseded=self._superseded,
            )
            for i in range(self.options.pool_size)
        ]
        await self.transport.start(self._receive, self._reconnected)
        self._tasks = [
            self._supervised("sender", self._run_sender),
            self._supervised("ticker", self._run_ticker),
        ]
        self.running = True
        for shard in self.shards:
            shard.flush()  # announce ourselves: peers see us up within one round trip
        logger.info(
            "tracker %s replica %s started on %s",
            self.name,
            self.replica_id,
            self.transport.description,
        )

    async def stop(self, graceful: bool = True) -> None:
        """Leave the cluster. Graceful: peers drop our rows at once; otherwise they find
        out through down detection, as after a crash."""
        if not self.running:
            return
        self.running = False
        self.stopped = True
        if graceful:
            for shard in self.shards:
                shard.goodbye()
            try:
                await asyncio.wait_for(self._outbox.join(), timeout=2.0)
            except TimeoutError:
                logger.warning("tracker %s: goodbye not delivered within 2 s", self.name)
        await cancel_and_wait(self._tasks)
        self._tasks = []
        for shard in self.shards:
            shard.cancel()
        for subscriber in self._subscribers:
            subscriber.close()
        self._subscribers = []
        if self._dispatch_handle is not None:
            self._dispatch_handle.cancel()
        if self.transport is not None:
            await self.transport.close()
        self._starting = None

    async def sync(self, within: float = 5.0) -> bool:
        """Wait until we have heard the cluster and caught up with every peer (what a
        short-lived observer does before reading). False if `within` seconds ran out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        listen = max(0.3, 2 * self.options.broadcast_period)
        await asyncio.sleep(min(listen, within))
        while loop.time() < deadline:
            if not any(shard.catching_up() for shard in self.shards):
                return True
            await asyncio.sleep(0.02)
        return False

    # -- writes --------------------------------------------------------------------------

    async def track(self, conn: str, topic: str, key: str, meta: dict[str, Any]) -> str:
        """Track `conn` on `topic` under `key`; returns the new row's ref.
        Raises AlreadyTracked if that (conn, topic, key) is tracked already, InvalidMeta if
        `meta` is not a dict that msgpack can carry."""
        shard = self._shard_for(topic, conn, key)
        return shard.track(conn, topic, key, wire.normalize_meta(meta, key)).ref

    async def update(self, conn: str, topic: str, key: str, meta: dict[str, Any]) -> str:
        """Replace the meta of a tracked row; returns the new ref (the old one leaves).
        Raises NotTracked if the row is not tracked."""
        shard = self._shard_for(topic, conn, key)
        return shard.update(conn, topic, key, wire.normalize_meta(meta, key)).ref

    async def untrack(self, conn: str, topic: str, key: str) -> None:
        """Stop tracking one row; untracking what is not tracked does nothing."""
        self._shard_for(topic, conn, key).untrack(conn, topic, key)

    async def untrack_all(self, conn: str) -> None:
        """Stop tracking every row of `conn` (on every topic)."""
        self._check_running()
        if not isinstance(conn, str):
            raise TypeError(f"conn must be a str, not {type(conn).__name__}")
        for shard in self.shards:
            shard.untrack_conn(conn)

    def _shard_for(self, topic: str, conn: str, key: str) -> Shard:
        # On every write: the checks are spelled out so that the common case stays cheap.
        if not self.running or self.observer:
            self._check_running()
        if not (isinstance(topic, str) and isinstance(conn, str) and isinstance(key, str)):
            for name, value in (("topic", topic), ("conn", conn), ("key", key)):
                if not isinstance(value, str):
                    raise TypeError(f"{name} must be a str, not {type(value).__name__}")
        shards = self.shards
        if len(shards) == 1:
            return shards[0]
        return shards[zlib.crc32(topic.encode()) % len(shards)]

    def _shard_index(self, topic: str) -> int:
        # A stable hash: every node must pick the same shard (and channel) for a topic.
        count = len(self.shards)
        return 0 if count == 1 else zlib.crc32(topic.encode()) % count

    def _check_running(self) -> None:
        if not self.running:
            raise RuntimeError(f"tracker {self.name!r} is not running; await start() first")
        if self.observer:
            raise RuntimeError("an observer tracker does not track")

    # -- reads (local memory) ------------------------------------------------------------

    def _shard_of(self, topic: str) -> Shard | None:
        return self.shards[self._shard_index(topic)] if self.shards else None

    def list(self, topic: str) -> Listing:
        """Every visible presence on `topic` as (key, meta)."""
        shard = self._shard_of(topic)
        if shard is None:
            return []
        with _gc_deferred():
            return shard.list(topic)

    def get_by_key(self, topic: str, key: str) -> Listing:
        """The presences of one key as (conn, meta)."""
        shard = self._shard_of(topic)
        return shard.get_by_key(topic, key) if shard else []

    def rows(self, topic: str) -> Rows:
        """Every visible presence on `topic` as the `Presence` rows diffs carry (read-only)."""
        shard = self._shard_of(topic)
        if shard is None:
            return []
        with _gc_deferred():
            return shard.rows(topic)

    def count(self, topic: str) -> int:
        """How many presences are visible on `topic`."""
        shard = self._shard_of(topic)
        return shard.count(topic) if shard else 0

    def topics(self) -> builtins.list[str]:
        """The topics with visible presences, in no particular order."""
        return [topic for shard in self.shards for topic in shard.topics()]

    def presence(self, topic: str) -> Grouped:
        """Grouped by key, as Phoenix Presence: {key: {"metas": [meta + {"ref": ...}]}}."""
        shard = self._shard_of(topic)
        grouped: Grouped = {}
        if shard is None:
            return grouped
        with _gc_deferred():
            for key, rows in shard.by_key(topic).items():
                grouped[key] = {"metas": [{**row.meta, "ref": row.ref} for row in rows]}
        return grouped

    def replicas(self) -> dict[str, str]:
        """This replica (unless an observer) and every peer known to any shard: "up", or
        "down" if any shard has it down."""
        result = {self.replica_id: UP} if self.running and not self.observer else {}
        for shard in self.shards:
            for peer, status in shard.replicas().items():
                if result.get(peer) != DOWN:
                    result[peer] = status
        return result

    def status(self) -> dict[str, Any]:
        """What operators look at: our clock and rows, and every peer per shard."""
        return {
            "tracker": self.name,
            "replica": self.replica_id,
            "transport": self.transport.description if self.transport else None,
            "observer": self.observer,
            "shards": [
                {
                    "index": shard.index,
                    "clock": shard.clock,
                    "rows": shard.owned(),
                    "peers": shard.peers(),
                    "stats": vars(shard.stats).copy(),
                }
                for shard in self.shards
            ],
            "superseded_by": self.superseded_by,
            "incompatible": self.incompatible_peers(self.options.permdown_period),
            "rejected": dict(self.rejected()),
            "receive_errors": self.receive_errors,
            "task_failures": dict(self.task_failures),
            "transport_health": self.transport.health() if self.transport else None,
        }

    def rejected(self) -> Counter[str]:
        """Frames dropped by their checks since start, by reason (see tracker.wire)."""
        total: Counter[str] = Counter()
        for shard in self.shards:
            total.update(shard.rejected)
        return total

    def incompatible_peers(self, within: float | None = None) -> dict[str, str]:
        """Peers refused for speaking another protocol version or having another shard
        count, heard within `within` seconds (default: down_period): {peer: what differs}."""
        window = self.options.down_period if within is None else within
        found: dict[str, str] = {}
        for shard in self.shards:
            found.update(shard.recent_incompatible(window))
        return found

    def health(self) -> dict[str, Any]:
        """Whether this replica's view of the cluster can be trusted now: it runs, its
        transport hears the medium, no incompatible peer was heard within down_period, no
        later process of its node name superseded it, and its tasks run. `problems` says
        what is wrong, in words for operators (empty when healthy)."""
        problems: builtins.list[str] = []
        transport = self.transport.health() if self.transport is not None else None
        if not self.running:
            problems.append("tracker not running")
        elif transport is not None and transport["problem"]:
            problems.append(transport["problem"])
        if self.superseded_by is not None:
            problems.append(f"superseded by {self.superseded_by} (a later start of this node)")
        incompatible = self.incompatible_peers()
        for peer, what in sorted(incompatible.items()):
            problems.append(f"incompatible peer {peer}: {what}")
        for task in self._tasks:
            if task.done():
                problems.append(f"task {task.get_name()} ended")
        return {
            "ok": not problems,
            "problems": problems,
            "transport": transport,
            "rejected": dict(self.rejected()),
            "receive_errors": self.receive_errors,
            "task_failures": dict(self.task_failures),
        }

    async def ping(self, timeout: float) -> None:  # noqa: ASYNC109 - the caller's bound
        """Round trip to the transport's medium on the transport's own connection; raises
        TransportUnavailable when it does not answer within `timeout` seconds."""
        if self.transport is None:
            raise TransportUnavailable("tracker not started")
        try:
            async with asyncio.timeout(timeout):
                await self.transport.ping()
        except TimeoutError:
            raise TransportUnavailable(f"no answer within {timeout} s") from None

    # -- subscribers ---------------------------------------------------------------------

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        """Call `callback({topic: (joins, leaves)})` after every batch of visible changes,
        local ones in the same loop iteration, remote ones when merged. Within a diff,
        joins and leaves are disjoint. A plain function must return quickly; a coroutine
        function runs in its own task. Failures are logged, never propagated."""
        subscriber = Subscriber(callback)
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)
                subscriber.close()

        return unsubscribe

    def _emit(self, joins: Rows, leaves: Rows) -> None:
        if not self._subscribers or not (joins or leaves):
            return
        self._pending.add(joins, leaves)
        if self._dispatch_handle is None:
            self._dispatch_handle = asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_handle = None
        diff = self._pending.take()
        if diff:
            for subscriber in list(self._subscribers):
                subscriber.deliver(diff)

    # -- transport -----------------------------------------------------------------------

    def _send(self, shard: int, to: str | None, payload: bytes) -> None:
        if self.superseded_by is None:  # a superseded replica says nothing more
            self._outbox.put_nowait(Outgoing(shard, to, payload))

    def _superseded(self, successor: str) -> None:
        """A later start of our node name runs: say goodbye (peers drop our rows and take
        it), then say nothing more."""
        if self.superseded_by is not None:
            return
        logger.error(
            "tracker %s: replica %s of our node name started after us (a restarted or "
            "duplicated process); this replica %s says goodbye and steps aside. Stop this "
            "process, or give each process its own TRACKER_NODE_NAME.",
            self.name,
            successor,
            self.replica_id,
        )
        for shard in self.shards:
            shard.goodbye()
        self.superseded_by = successor

    def _supervised(self, name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run `run` (a loop meant to run until cancelled) in a task that logs and restarts
        it if it ever ends, so the replica never silently stops sending or ticking."""

        async def supervise() -> None:
            loop = asyncio.get_running_loop()
            while True:
                try:
                    await run()
                    raise RuntimeError("returned")
                except Exception:
                    if loop.is_closed():  # abandoned with its loop: nothing to restart
                        raise
                    self.task_failures[name] += 1
                    logger.exception("tracker %s: %s task failed; restarting it", self.name, name)
                await asyncio.sleep(TASK_RESTART_DELAY)

        return asyncio.create_task(supervise(), name=f"tracker-{self.name}-{name}")

    async def _run_sender(self) -> None:
        outbox, transport = self._outbox, self.transport
        assert transport is not None  # started before the sender
        while True:
            batch = [await outbox.get()]
            while not outbox.empty():
                batch.append(outbox.get_nowait())
            try:
                await transport.publish(batch)
            except TransportUnavailable as error:
                # Lost messages leave gaps that peers repair by transfer later.
                self.publish_failures += 1
                if self.publish_failures == 1 or self.publish_failures % 100 == 0:
                    logger.warning(
                        "tracker %s: %s (%d failures)", self.name, error, self.publish_failures
                    )
            finally:
                for _ in batch:
                    outbox.task_done()

    async def _run_ticker(self) -> None:
        period = self.options.broadcast_period
        while True:
            await asyncio.sleep(period)
            for shard in self.shards:
                try:
                    shard.tick()
                except Exception:
                    logger.exception("tracker %s: shard %d tick failed", self.name, shard.index)

    def _receive(self, shard: int, payload: bytes) -> None:
        if not self.running:
            return
        try:
            if shard < len(self.shards):
                self.shards[shard].receive(payload)
            else:  # only a peer with more shards than ours uses that channel
                self.shards[0].receive_foreign(payload, shard)
        except Exception:
            # The frame passed every check, so this is a bug in the runtime, not a bad
            # frame: say so with the traceback, and keep listening.
            self.receive_errors += 1
            logger.exception("tracker %s: applying a valid frame failed", self.name)

    def _reconnected(self) -> None:
        for shard in self.shards:
            shard.reconnected()
