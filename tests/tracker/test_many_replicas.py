"""Convergence at scale: thirty replicas on one in-process bus that loses 10 % of the
deliveries and reorders them, under churn (tracks, updates, untracks, untrack_alls on
random replicas; crashes, graceful stops and new replicas joining), then exact agreement:
every live replica shows the union of what the live replicas track, and keeps showing it.

`bench/replica_simulation.py` is the long version of this (100 replicas, figures)."""

from __future__ import annotations

import asyncio
import random

from tracker import LocalBus

from .conftest import eventually

REPLICAS = 30
SEED = 5
TOPICS = tuple(f"page-{i}" for i in range(8))
# Slower than FAST: thirty replicas share one event loop on a small machine. A live peer
# looks down when down_period / silent interval heartbeats in a row are lost: at 10 % loss
# with 30 x 29 pairs, 3 in a row happens within seconds, 8 in a row practically never.
TIMINGS = {
    "broadcast_period": 0.1,
    "max_silent_periods": 3,  # an empty heartbeat every 0.3 s at the least
    "down_period": 2.5,
    "permdown_period": 6.0,
    "clock_sample_periods": 2,
}
CHURN = 2.5  # seconds
OPS_PER_REPLICA_PER_SECOND = 2.0
# (seconds into the churn, what happens to the cluster)
MEMBERSHIP = [
    (0.3, "crash"),
    (0.6, "join"),
    (0.9, "graceful"),
    (1.2, "join"),
    (1.5, "crash"),
    (1.8, "join"),
    (2.1, "graceful"),
    (2.3, "join"),
]


class Cluster:
    """The live replicas and, for each, what it tracks itself: the truth."""

    def __init__(self, make_tracker, bus: LocalBus, rng: random.Random) -> None:
        self.make_tracker = make_tracker
        self.bus = bus
        self.rng = rng
        self.live: dict[str, tuple] = {}  # replica id -> (tracker, {(topic, conn, key): n})
        self.stopped: list = []
        self.n = 0

    async def join(self) -> None:
        tracker = await self.make_tracker("many", bus=self.bus, **TIMINGS)
        self.live[tracker.replica_id] = (tracker, {})

    async def leave(self, *, graceful: bool) -> None:
        replica = self.rng.choice(sorted(self.live))
        tracker, _ = self.live.pop(replica)
        await tracker.stop(graceful=graceful)
        self.stopped.append(tracker)

    async def op(self) -> None:
        rng = self.rng
        tracker, rows = self.live[rng.choice(sorted(self.live))]
        self.n += 1
        if not rows or rng.random() < 0.45:
            conns = sorted({conn for (_, conn, _) in rows})
            if conns and rng.random() < 0.3:
                conn = rng.choice(conns)  # a second row for a connection
            else:
                conn = f"{tracker.replica_id}/c{self.n}"
            row = (rng.choice(TOPICS), conn, f"k{rng.randrange(50)}")
            if row not in rows:
                await tracker.track(row[1], row[0], row[2], {"conn": conn, "n": self.n})
                rows[row] = self.n
            return
        row = rng.choice(sorted(rows))
        topic, conn, key = row
        roll = rng.random()
        if roll < 0.4:
            await tracker.update(conn, topic, key, {"conn": conn, "n": self.n})
            rows[row] = self.n
        elif roll < 0.9:
            await tracker.untrack(conn, topic, key)
            del rows[row]
        else:
            await tracker.untrack_all(conn)
            for gone in [r for r in rows if r[1] == conn]:
                del rows[gone]

    def truth(self) -> list[tuple]:
        return sorted(
            (topic, key, conn, n)
            for _, rows in self.live.values()
            for (topic, conn, key), n in rows.items()
        )

    def owner(self, row: tuple) -> str | None:
        topic, key, conn, n = row
        for replica, (_, rows) in self.live.items():
            if rows.get((topic, conn, key)) == n:
                return replica
        return None

    def check(self) -> None:
        """Every live replica shows exactly the truth (duplicates count)."""
        truth = self.truth()
        for replica, (tracker, _) in self.live.items():
            view = sorted(
                (topic, key, meta["conn"], meta["n"])
                for topic in TOPICS
                for key, meta in tracker.list(topic)
            )
            if view != truth:
                missing = sorted(set(truth) - set(view))
                extra = sorted(set(view) - set(truth))
                owners = {self.owner(row) for row in missing}
                peers = {
                    peer: info
                    for shard in tracker.status()["shards"]
                    for peer, info in shard["peers"].items()
                    if peer in owners
                }
                raise AssertionError(
                    f"{replica}: {len(view)} rows shown, {len(truth)} tracked; "
                    f"missing {missing[:5]}, extra {extra[:5]}, "
                    f"duplicated {len(view) - len(set(view))}; its view of the owners of the "
                    f"missing rows: {peers} (seed {SEED})"
                )
        ids = set(self.live)
        for replica, (tracker, _) in self.live.items():
            up = {peer for peer, status in tracker.replicas().items() if status == "up"}
            assert up == ids, (
                f"{replica} sees {sorted(up - ids)} up that stopped and misses {sorted(ids - up)}"
            )


async def test_thirty_replicas_with_churn_and_ten_percent_loss_converge_exactly(make_tracker):
    loop = asyncio.get_running_loop()
    rng = random.Random(SEED)
    bus = LocalBus(loss=0.1, delay=(0.0, 0.03), seed=SEED)
    cluster = Cluster(make_tracker, bus, rng)
    for _ in range(REPLICAS):
        await cluster.join()
    await eventually(cluster.check, timeout=5)

    started = last = loop.time()
    events = list(MEMBERSHIP)
    while (now := loop.time()) < started + CHURN:
        # A Poisson number of ops for the time that passed, on random replicas.
        expected = OPS_PER_REPLICA_PER_SECOND * len(cluster.live) * (now - last)
        last = now
        for _ in range(sum(rng.random() < expected / 10 for _ in range(10))):
            await cluster.op()
        while events and now - started >= events[0][0]:
            _, event = events.pop(0)
            if event == "join":
                await cluster.join()
            else:
                await cluster.leave(graceful=event == "graceful")
        await asyncio.sleep(0.01)
    assert not events
    assert cluster.n >= 100, "too few operations: the loop was too slow to churn"
    assert len(cluster.live) == REPLICAS and len(cluster.stopped) == 4

    # Exact agreement within a bound: the last crash is found out after down_period,
    # a loss is repaired by a transfer within a silent interval or two.
    took = await eventually(cluster.check, timeout=TIMINGS["down_period"] + 3.0, interval=0.05)
    # ... and it holds: no ghost comes back, nothing flaps.
    await asyncio.sleep(3 * TIMINGS["broadcast_period"] * TIMINGS["max_silent_periods"])
    cluster.check()

    # The losses were repaired by transfers, not by luck.
    stats = [s["stats"] for t, _ in cluster.live.values() for s in t.status()["shards"]]
    assert sum(s["transfers_received"] for s in stats) > 0
    print(f"converged {took:.2f} s after the churn stopped; {bus.messages} messages")
