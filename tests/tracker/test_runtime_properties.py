"""Property test of the whole pipeline: tracker runtime -> diffs -> DashboardHub -> staff view.

Hypothesis drives several replicas on an in-process bus whose every message waits until the
test delivers, duplicates or drops it, on an event loop with virtual time. A step is either
a run of the loop (ticks, heartbeats, down detection), or a batch of events inside one loop
iteration: local tracks, updates and untracks, deliveries, ticks, and time jumps (a frozen
process or a collector pause). Partitions, crashes, goodbyes and restarts (also under a
clock that is behind, and with the predecessor still running) happen in between.

After every step, on every replica:
- replaying every diff its subscribers received, from empty, gives `list()` exactly;
- at most one row is visible per (owner, topic, conn, key);
- the dashboard hub's aggregates equal a recomputation from `presence()`, and the staff
  view built from its snapshot and diffs equals them once the hub has flushed.
At the end the network heals and every replica shows exactly the rows of the live ones.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from dashboard.aggregates import Aggregator
from dashboard.hub import DashboardHub
from tests.virtual_time import VirtualTimeLoop
from tracker import LocalBus, Tracker
from tracker.transports.base import Outgoing
from tracker.transports.local import LocalTransport

from .conftest import FAST, Replay, visible_refs

CARTS, OTHER = "carts", "other"
TOPICS = (CARTS, OTHER)
NODES = ("n0", "n1", "n2")
HUB_INTERVAL = 0.1


@dataclass
class Flight:
    sender: str
    receiver: LocalTransport
    shard: int
    payload: bytes


class HeldBus(LocalBus):
    """A bus that holds every message until the test delivers, duplicates or drops it
    (`hold=False`: delivers as the fault-free LocalBus does)."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight: list[Flight] = []
        self.hold = True

    def _route(self, sender: LocalTransport, message: Outgoing) -> None:
        if not self.hold:
            return super()._route(sender, message)
        for receiver in self._receivers(sender, message):
            self.in_flight.append(Flight(sender.replica, receiver, message.shard, message.payload))

    def deliver(self, index: int, copies: int = 1) -> None:
        flight = self.in_flight.pop(index % len(self.in_flight))
        for _ in range(copies):
            flight.receiver._arrive(flight.shard, flight.payload)

    def release(self) -> None:
        """Deliver everything held, in order, as the loop runs."""
        held, self.in_flight = self.in_flight, []
        for flight in held:
            flight.receiver.deliver(flight.shard, flight.payload, 0.0)


class StaffView:
    """A staff client: applies the hub's snapshot and every diff, as dashboard.js does."""

    def __init__(self) -> None:
        self.stats: dict[str, Any] | None = None

    def apply(self, message: dict[str, Any]) -> None:
        if message["type"] == "snapshot":
            self.stats = message["stats"]
            return
        for name, value in message["stats"].items():
            if isinstance(value, dict):
                target = self.stats[name]
                for key, entry in value.items():
                    if entry in (0, None):
                        target.pop(key, None)
                    else:
                        target[key] = entry
            else:
                self.stats[name] = value


@dataclass
class Node:
    name: str
    tracker: Tracker
    replay: Replay
    hub: DashboardHub
    queue: Any
    staff: StaffView = field(default_factory=StaffView)
    rows: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    successor_of: Node | None = None

    def drain(self) -> None:
        while not self.queue.empty():
            self.staff.apply(self.queue.get_nowait())


def run_now(coroutine: Any) -> Any:
    """Run a coroutine that never suspends (the tracker's writes) to its end, here."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the coroutine suspended")


def recomputed(tracker: Tracker) -> dict[str, Any]:
    aggregator = Aggregator()

    class Row:
        def __init__(self, key: str, meta: dict[str, Any]) -> None:
            self.key, self.meta, self.ref = key, meta, meta["ref"]

    aggregator.apply(
        [Row(key, m) for key, g in tracker.presence(CARTS).items() for m in g["metas"]], []
    )
    return aggregator.snapshot()


op = st.tuples(
    st.integers(0, len(NODES) - 1),  # node
    st.sampled_from(["track", "update", "untrack", "untrack_all"]),
    st.integers(0, 2),  # conn
    st.sampled_from(TOPICS),
    st.integers(0, 2),  # key
)
event = st.one_of(
    st.tuples(st.just("op"), op),
    st.tuples(st.just("deliver"), st.integers(0, 10**6), st.integers(1, 2)),
    st.tuples(st.just("drop"), st.integers(0, 10**6)),
    st.tuples(st.just("tick"), st.integers(0, len(NODES) - 1)),
    st.tuples(st.just("jump"), st.sampled_from([0.05, 0.2, 0.45, 0.55, 1.0, 2.5])),
)


class RuntimeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = VirtualTimeLoop()
        self.bus = HeldBus()
        self.nodes: dict[str, Node] = {}
        self.retired: list[Node] = []  # superseded predecessors that still run
        self.down: set[str] = set()  # node names crashed or stopped, not restarted
        self.counter = itertools.count()

    # -- set-up and helpers --------------------------------------------------------------

    @initialize()
    def start_nodes(self) -> None:
        for name in NODES:
            self.nodes[name] = self.start(name)
        self.bus.hold = False
        self.loop.run_for(0.3)  # everyone greets everyone
        self.bus.hold = True

    def start(self, name: str, wall_clock: int | None = None) -> Node:
        tracker = Tracker("t", bus=self.bus, node_name=name, **FAST)
        if wall_clock is None:
            self.loop.run_until_complete(tracker.start())
        else:
            with mock.patch("time.time", return_value=wall_clock):
                self.loop.run_until_complete(tracker.start())
        replay = Replay()
        tracker.subscribe(replay)
        hub = DashboardHub(HUB_INTERVAL, clock=self.loop.time)

        async def attach() -> Any:
            hub.attach(tracker)
            return hub.register()

        queue = self.loop.run_until_complete(attach())
        return Node(name, tracker, replay, hub, queue)

    def meta(self, topic: str, key: str) -> dict[str, Any]:
        n = next(self.counter)
        if topic == CARTS:
            return {
                "cart_id": key,
                "page": f"/p{n % 3}/",
                "items": {str(n % 4): 1 + n % 2} if n % 5 else {},
                "user": None,
                "joined_at": 1.0,
                "rev": n,
            }
        return {"n": n}

    def local_op(self, node_index: int, kind: str, conn_i: int, topic: str, key_i: int) -> None:
        name = NODES[node_index]
        node = self.nodes.get(name)
        if node is None:
            return
        tracker, rows = node.tracker, node.rows
        conn, key = f"{name}-c{conn_i}", f"k{key_i}"
        row = (topic, conn, key)
        if kind == "untrack_all":
            run_now(tracker.untrack_all(conn))
            for gone in [r for r in rows if r[1] == conn]:
                del rows[gone]
        elif row not in rows:
            meta = self.meta(topic, key)
            run_now(tracker.track(conn, topic, key, meta))
            rows[row] = meta
        elif kind == "untrack":
            run_now(tracker.untrack(conn, topic, key))
            del rows[row]
        else:
            meta = self.meta(topic, key)
            run_now(tracker.update(conn, topic, key, meta))
            rows[row] = meta

    def in_one_iteration(self, events: list[tuple]) -> None:
        def batch() -> None:
            for kind, *args in events:
                if kind == "op":
                    self.local_op(*args[0])
                elif kind == "deliver" and self.bus.in_flight:
                    self.bus.deliver(args[0], copies=args[1])
                elif kind == "drop" and self.bus.in_flight:
                    self.bus.in_flight.pop(args[0] % len(self.bus.in_flight))
                elif kind == "tick":
                    node = self.nodes.get(NODES[args[0]])
                    if node is not None:
                        for shard in node.tracker.shards:
                            shard.tick()
                elif kind == "jump":
                    self.loop.jump(args[0])

        self.loop.call_soon(batch)
        self.loop.settle()

    def running(self) -> list[Node]:
        return [*self.nodes.values(), *self.retired]

    # -- rules ---------------------------------------------------------------------------

    @rule(events=st.lists(event, min_size=1, max_size=12))
    def batch(self, events: list[tuple]) -> None:
        self.in_one_iteration(events)

    @rule(seconds=st.sampled_from([0.01, 0.05, 0.12, 0.3, 0.6]))
    def run(self, seconds: float) -> None:
        self.loop.run_for(seconds)

    @rule(node=st.sampled_from(NODES))
    def partition(self, node: str) -> None:
        here = self.nodes.get(node)
        if here is not None:
            others = [n.tracker.replica_id for n in self.running() if n is not here]
            self.bus.partition([here.tracker.replica_id], others)

    @rule()
    def heal(self) -> None:
        self.bus.heal()

    @rule(node=st.sampled_from(NODES), graceful=st.booleans())
    def stop(self, node: str, graceful: bool) -> None:
        if len(self.nodes) < 2 or node not in self.nodes:
            return  # keep one replica at least
        gone = self.nodes.pop(node)
        self.loop.run_until_complete(gone.tracker.stop(graceful=graceful))
        gone.hub.close()
        self.down.add(node)

    @rule(node=st.sampled_from(NODES), skew=st.sampled_from([-3600, 0, 3600]))
    def restart(self, node: str, skew: int) -> None:
        """A new process under the node name of a stopped one; its clock may be behind."""
        if node not in self.down:
            return
        self.down.discard(node)
        self.nodes[node] = self.start(node, wall_clock=1_900_000_000 + skew)

    @rule(node=st.sampled_from(NODES), skew=st.sampled_from([-3600, 3600]))
    def replace_running(self, node: str, skew: int) -> None:
        """A successor starts while its predecessor still runs (frozen, or not yet killed)."""
        old = self.nodes.get(node)
        if old is None or self.retired:
            return
        self.loop.run_for(0.01)  # it starts later (at the same instant, neither is older)
        new = self.start(node, wall_clock=1_900_000_000 + skew)
        new.successor_of = old
        self.nodes[node] = new
        self.retired.append(old)

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def diffs_replay_to_the_list(self) -> None:
        for node in self.running():
            t = node.tracker
            assert node.replay.problems == [], (t.replica_id, node.replay.problems[:3])
            assert node.replay.visible == visible_refs(t, TOPICS), t.replica_id

    @invariant()
    def one_visible_row_per_owner_and_identity(self) -> None:
        for node in self.running():
            for topic in TOPICS:
                identities = [(r.replica, r.conn, r.key) for r in visible_rows(node.tracker, topic)]
                assert len(identities) == len(set(identities)), (node.tracker.replica_id, topic)

    @invariant()
    def hub_aggregates_equal_a_recomputation(self) -> None:
        for node in self.running():
            assert node.hub.aggregator.snapshot() == recomputed(node.tracker)
            node.drain()
            if not node.hub.pending and node.staff.stats is not None:
                assert node.staff.stats == node.hub.aggregator.snapshot()

    # -- the end -------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            self.converge()
        finally:
            for node in self.running():
                self.loop.run_until_complete(node.tracker.stop(graceful=False))
                node.hub.close()
            self.loop.settle()
            self.loop.close()

    def converge(self) -> None:
        self.bus.heal()
        self.bus.hold = False
        self.loop.call_soon(self.bus.release)
        # Long enough for crashed replicas to be purged everywhere (permdown).
        self.loop.run_for(FAST["permdown_period"] + 2 * FAST["down_period"])
        self.diffs_replay_to_the_list()
        self.hub_aggregates_equal_a_recomputation()
        for old in self.retired:  # a predecessor steps aside once a successor is heard
            if old.name in self.nodes:
                successor = old.tracker.superseded_by
                assert successor is not None and successor != old.tracker.replica_id
                assert successor.startswith(f"{old.name}:")
        members = [*self.nodes.values()]
        members += [old for old in self.retired if old.tracker.superseded_by is None]
        want = sorted(
            (topic, key, repr(sorted(meta.items())))
            for node in members
            for (topic, _conn, key), meta in node.rows.items()
        )
        ids = {node.tracker.replica_id for node in members}
        for node in members:
            got = sorted(
                (topic, key, repr(sorted(meta.items())))
                for topic in TOPICS
                for key, meta in node.tracker.list(topic)
            )
            assert got == want, node.tracker.replica_id
            assert node.tracker.replicas() == dict.fromkeys(ids, "up")


def visible_rows(tracker: Tracker, topic: str) -> list[Any]:
    return tracker.rows(topic)


TestRuntime = RuntimeMachine.TestCase
TestRuntime.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
