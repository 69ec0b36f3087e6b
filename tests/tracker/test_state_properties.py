"""Property tests of the pure CRDT: random histories over 3-5 replicas, with messages
reordered, duplicated and lost, transfers, and replicas going down, up and permdown."""

from __future__ import annotations

import copy
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tracker.deltas import Delta
from tracker.state import AlreadyTracked, NotTracked, State

TOPICS = ["t0", "t1"]
KEYS = ["k0", "k1", "k2"]

op = st.one_of(
    st.tuples(
        st.just("join"),
        st.integers(0, 4),
        st.integers(0, 3),
        st.sampled_from(TOPICS),
        st.sampled_from(KEYS),
        st.integers(0, 9),
    ),
    st.tuples(
        st.just("leave"),
        st.integers(0, 4),
        st.integers(0, 3),
        st.sampled_from(TOPICS),
        st.sampled_from(KEYS),
    ),
    st.tuples(
        st.just("update"),
        st.integers(0, 4),
        st.integers(0, 3),
        st.sampled_from(TOPICS),
        st.sampled_from(KEYS),
        st.integers(0, 9),
    ),
    st.tuples(st.just("exit"), st.integers(0, 4), st.integers(0, 3)),
    st.tuples(st.just("broadcast"), st.integers(0, 4)),
    st.tuples(st.just("deliver"), st.integers(0, 4), st.integers(0, 50)),
    st.tuples(st.just("duplicate"), st.integers(0, 4), st.integers(0, 50)),
    st.tuples(st.just("lose"), st.integers(0, 4), st.integers(0, 50)),
    st.tuples(st.just("transfer"), st.integers(0, 4), st.integers(0, 4)),
    st.tuples(st.just("down"), st.integers(0, 4), st.integers(0, 4)),
    st.tuples(st.just("up"), st.integers(0, 4), st.integers(0, 4)),
)


class Cluster:
    """Replicas exchanging deltas through per-receiver inboxes, next to a sequential model."""

    def __init__(self, n: int, delta_sizes=(2, 5, 20)) -> None:
        self.names = [f"r{i}" for i in range(n)]
        self.states = {name: State(name, delta_sizes) for name in self.names}
        self.inbox: dict[str, list] = {name: [] for name in self.names}
        self.model: dict[tuple[str, str, str, str], int] = {}  # (owner, conn, topic, key) -> meta
        self.crashed: set[str] = set()

    def live(self) -> list[str]:
        return [n for n in self.names if n not in self.crashed]

    def name(self, i: int) -> str:
        return self.names[i % len(self.names)]

    def apply(self, step: tuple) -> None:
        kind, *args = step
        if kind in {"join", "leave", "update", "exit"}:
            owner = self.name(args[0])
            if owner in self.crashed:
                return
            getattr(self, "_" + kind)(owner, f"{owner}-c{args[1]}", *args[2:])
        elif kind == "broadcast":
            sender = self.name(args[0])
            if sender in self.crashed:
                return
            delta = self.states[sender].take_delta()
            for receiver in self.names:
                if receiver != sender:
                    self.inbox[receiver].append(copy.copy(delta))
        elif kind in {"deliver", "duplicate", "lose"}:
            box = self.inbox[self.name(args[0])]
            if not box:
                return
            index = args[1] % len(box)
            message = box[index] if kind == "duplicate" else box.pop(index)
            if kind != "lose":
                self.merge(self.name(args[0]), message)
        elif kind == "transfer":
            self.transfer(self.name(args[0]), self.name(args[1]))
        elif kind in {"down", "up"}:
            at, peer = self.name(args[0]), self.name(args[1])
            if at != peer and peer not in self.crashed:  # nothing brings a dead peer up
                if kind == "down":
                    self.states[at].replica_down(peer)
                else:  # an empty heartbeat of the peer, delayed by nothing
                    clock = self.states[peer].clock
                    self.states[at].merge(Delta(peer, clock, clock))

    def merge(self, receiver: str, delta) -> None:
        state = self.states[receiver]
        if delta.replica in self.crashed and state.status_of(delta.replica) is None:
            return  # a late message from a replica this one already purged
        state.merge(delta)  # hearing from a replica brings it up

    def transfer(self, receiver: str, owner: str) -> None:
        if receiver == owner or owner in self.crashed:
            return
        since = self.states[receiver].context().get(owner, 0)
        self.merge(receiver, self.states[owner].extract(since))

    def _join(self, owner, conn, topic, key, meta) -> None:
        state = self.states[owner]
        if (owner, conn, topic, key) in self.model:
            try:
                state.join(conn, topic, key, {"v": meta})
            except AlreadyTracked:
                return
            raise AssertionError("double join accepted")
        state.join(conn, topic, key, {"v": meta})
        self.model[(owner, conn, topic, key)] = meta

    def _leave(self, owner, conn, topic, key) -> None:
        state = self.states[owner]
        if (owner, conn, topic, key) not in self.model:
            try:
                state.leave(conn, topic, key)
            except NotTracked:
                return
            raise AssertionError("leave of an untracked row accepted")
        state.leave(conn, topic, key)
        del self.model[(owner, conn, topic, key)]

    def _update(self, owner, conn, topic, key, meta) -> None:
        if (owner, conn, topic, key) not in self.model:
            return
        joins, leaves = self.states[owner].update(conn, topic, key, {"v": meta})
        assert [r.meta for r in joins] == [{"v": meta}] and len(leaves) == 1
        self.model[(owner, conn, topic, key)] = meta

    def _exit(self, owner, conn) -> None:
        left = self.states[owner].leave_conn(conn)
        gone = [k for k in self.model if k[0] == owner and k[1] == conn]
        assert len(left) == len(gone)
        for k in gone:
            del self.model[k]

    def settle(self) -> None:
        """Deliver what is in flight, bring every peer up, then repair losses by transfers."""
        for name in self.live():
            self.apply(("broadcast", self.names.index(name)))
        for name in self.live():
            while self.inbox[name]:
                self.merge(name, self.inbox[name].pop(0))
        for at in self.live():
            for peer in self.live():
                if peer != at:  # an empty heartbeat of each peer brings it up
                    clock = self.states[peer].clock
                    self.states[at].merge(Delta(peer, clock, clock))
        for at in self.live():
            for owner in self.live():
                self.transfer(at, owner)

    def view(self, name: str) -> set:
        state = self.states[name]
        return {
            (row.replica, row.conn, row.topic, row.key, row.meta["v"])
            for topic in state.topics()
            for row in state.rows(topic)
        }

    def expected(self) -> set:
        return {(o, c, t, k, v) for (o, c, t, k), v in self.model.items() if o not in self.crashed}


histories = st.tuples(st.integers(3, 5), st.lists(op, max_size=120))


@settings(max_examples=300, deadline=None)
@given(histories)
def test_replicas_converge_to_the_sequential_model(history):
    n, steps = history
    cluster = Cluster(n)
    for step in steps:
        cluster.apply(step)
    cluster.settle()
    expected = cluster.expected()
    for name in cluster.names:
        assert cluster.view(name) == expected, name
        assert not any(cluster.states[name].behind(p) for p in cluster.names if p != name)


@settings(max_examples=200, deadline=None)
@given(histories, st.data())
def test_permdown_purges_a_crashed_replicas_rows_everywhere(history, data):
    n, steps = history
    cluster = Cluster(n)
    for step in steps:
        cluster.apply(step)
    victim = cluster.name(data.draw(st.integers(0, n - 1)))
    cluster.crashed.add(victim)
    for name in cluster.live():
        cluster.states[name].replica_permdown(victim)
    more = data.draw(st.lists(op, max_size=40))
    for step in more:
        cluster.apply(step)
    cluster.settle()
    for name in cluster.live():
        state = cluster.states[name]
        assert cluster.view(name) == cluster.expected()
        assert victim not in state.context() and state.held(victim) == 0


@settings(max_examples=200, deadline=None)
@given(histories, st.randoms(use_true_random=False))
def test_merge_is_idempotent_and_order_independent(history, rnd: random.Random):
    """Every delta of every owner, merged in two random orders with duplicates, gives two
    identical replicas; merging anything twice changes nothing."""
    n, steps = history
    cluster = Cluster(n)
    deltas = []
    for step in steps:
        if step[0] in {"join", "leave", "update", "exit"}:
            cluster.apply(step)
        elif step[0] == "broadcast":
            deltas.append(cluster.states[cluster.name(step[1])].take_delta())
    for name in cluster.names:
        deltas.append(cluster.states[name].take_delta())

    a, b = State("observer-a"), State("observer-b")
    order_a = deltas + rnd.sample(deltas, k=len(deltas) // 2)
    order_b = rnd.sample(deltas, k=len(deltas))
    rnd.shuffle(order_a)
    for d in order_a:
        a.merge(d)
    for d in order_b:
        b.merge(d)
    assert a.visible() == b.visible()
    assert {o: s for o, s in a.knowledge().items() if o != a.replica} == {
        o: s for o, s in b.knowledge().items() if o != b.replica
    }
    truth = {(o, c, t, k, v) for (o, c, t, k), v in cluster.model.items()}
    seen_rows = {
        (r.replica, r.conn, r.topic, r.key, r.meta["v"]) for t in a.topics() for r in a.rows(t)
    }
    assert seen_rows == truth
    for d in deltas:
        assert a.merge(d) == ([], [])
    for name in cluster.names:
        assert not a.behind(name)


@settings(max_examples=200, deadline=None)
@given(st.lists(op, max_size=80), st.integers(1, 6))
def test_joined_deltas_merge_like_their_parts(steps, cut_every):
    """Associativity: one owner's consecutive deltas joined first, or merged one by one."""
    cluster = Cluster(3)
    owner = cluster.states["r0"]
    parts = []
    for i, step in enumerate(steps):
        if step[0] in {"join", "leave", "update", "exit"}:
            cluster.apply((step[0], 0, *step[2:]))
        if i % cut_every == 0:
            parts.append(owner.take_delta())
    parts.append(owner.take_delta())
    joined = parts[0].copy()
    for part in parts[1:]:
        joined.extend(part)
    one, many = State("x"), State("y")
    one.merge(joined)
    for part in parts:
        many.merge(part)
    assert one.visible() == many.visible() == owner.visible()
    assert one.knowledge()["r0"] == many.knowledge()["r0"] == owner.knowledge()["r0"]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(KEYS), st.integers(0, 9)), min_size=1, max_size=30))
def test_update_never_leaves_the_old_row_behind(updates):
    owner, peer = State("a"), State("b")
    owner.join("conn", "t", "k0", {"v": -1})
    for key, value in updates:
        owner.update("conn", "t", "k0", {"v": value, "key": key})
        peer.merge(owner.take_delta())
        for state in (owner, peer):
            assert state.get_by_key("t", "k0") == [("conn", {"v": value, "key": key})]


def test_extract_answers_a_peer_a_little_behind_with_a_small_delta():
    owner = State("a", max_delta_sizes=(5, 50))
    for i in range(200):
        owner.join(f"c{i}", "t", "k", {})
        if i % 3 == 0:
            owner.take_delta()
    owner.take_delta()
    recent = owner.extract(owner.clock - 2)
    assert recent.start <= owner.clock - 2 and recent.size <= 5
    far = owner.extract(0)
    assert far.start == 0 and len(far.rows) == 200


def test_down_hides_rows_and_up_brings_them_back():
    a, b = State("a"), State("b")
    a.join("c1", "t", "k", {"n": 1})
    b.merge(a.take_delta())
    assert b.list("t") == [("k", {"n": 1})]
    assert [r.conn for r in b.replica_down("a")] == ["c1"]
    assert b.list("t") == []
    joins, leaves = b.merge(Delta("a", a.clock, a.clock))  # its next (empty) heartbeat
    assert [r.conn for r in joins] == ["c1"] and leaves == []
    assert b.list("t") == [("k", {"n": 1})]
    assert [r.conn for r in b.replica_permdown("a")] == ["c1"]
    assert b.list("t") == [] and "a" not in b.context()


def test_a_gap_is_detected_and_filled_by_a_transfer():
    a, b = State("a"), State("b")
    a.join("c1", "t", "k", {})
    a.take_delta()  # lost on the way to b
    a.join("c2", "t", "k", {})
    b.merge(a.take_delta())
    assert b.behind("a")
    assert {c for c, _ in b.get_by_key("t", "k")} == {"c2"}
    b.merge(a.extract(b.context()["a"]))
    assert not b.behind("a")
    assert {c for c, _ in b.get_by_key("t", "k")} == {"c1", "c2"}
