"""Replicas over a real redis-server (started per test on a free port, so that a test
may kill and restart it), in this process and in separate OS processes."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from pathlib import Path

import pytest

from tracker import Tracker, TransportUnavailable
from tracker.transports import Outgoing

from .conftest import (
    FAST,
    Recorder,
    Replay,
    Workload,
    converged,
    eventually,
    refs,
    start_cluster,
    visible_refs,
)

ROOT = Path(__file__).resolve().parents[2]


async def with_rows(make_tracker, url, count=5, **options):
    """Replicas a and b (b with `options`); b tracks `count` rows on "room", a one row;
    returns them once each sees all rows, and b's refs."""
    a = await make_tracker(redis_url=url)
    b = await make_tracker(redis_url=url, **options)
    b_refs = {await b.track(f"c{i}", "room", f"k{i}", {"i": i}) for i in range(count)}
    await a.track("a-conn", "room", "a-key", {})
    await eventually(lambda: len(a.list("room")) == count + 1 and len(b.list("room")) == count + 1)
    return a, b, b_refs


def drop_broadcasts(tracker: Tracker, rate: float, seed: int) -> list[int]:
    """Fault injection on a started tracker: its transport drops `rate` of the broadcast
    messages (heartbeats) it is asked to publish; direct messages (transfers) pass.
    Returns a counter [dropped, broadcasts]."""
    rng = random.Random(seed)
    publish = tracker.transport.publish
    counts = [0, 0]

    async def lossy(messages: list[Outgoing]) -> None:
        kept = []
        for message in messages:
            if message.to is None:
                counts[1] += 1
                if rng.random() < rate:
                    counts[0] += 1
                    continue
            kept.append(message)
        if kept:
            await publish(kept)

    tracker.transport.publish = lossy
    return counts


async def test_unreachable_redis_raises_transport_unavailable(make_tracker, redis_server):
    url = redis_server.url
    redis_server.kill()
    tracker = await make_tracker(redis_url=url, start=False)
    with pytest.raises(TransportUnavailable, match="127.0.0.1"):
        await tracker.start()
    assert not tracker.running


async def test_stop_returns_when_cancelled_mid_publish(make_tracker, redis_server):
    # redis-py wraps each socket write in asyncio.wait_for, which on Python 3.11 drops a
    # cancellation landing in the same loop iteration as the write's completion; stop()
    # then waited for ever on the sender task. Stop a few loop iterations after a change
    # (the flush, the publish, the write), one offset per fresh tracker.
    quiet = {"max_silent_periods": 100, "down_period": 10.0, "permdown_period": 20.0}
    for offset in range(8):
        t = await make_tracker(redis_url=redis_server.url, **quiet)
        # No heartbeat is due for a while, so the change goes out at once.
        await asyncio.sleep(2 * FAST["broadcast_period"])
        await t.track("c", "room", "k", {})
        for _ in range(offset):
            await asyncio.sleep(0)
        try:
            await asyncio.wait_for(t.stop(graceful=False), 2)
        except TimeoutError:
            pytest.fail(f"stop() hung when cancelled {offset} loop iterations after a change")
        assert not t.running


@pytest.mark.parametrize("pool_size", [1, 3])
async def test_three_replicas_converge(make_tracker, redis_server, pool_size):
    trackers = await start_cluster(make_tracker, 3, redis_url=redis_server.url, pool_size=pool_size)
    replays = [Replay() for _ in trackers]
    for t, replay in zip(trackers, replays, strict=True):
        t.subscribe(replay)
    work = Workload(trackers, seed=21, topics=("a", "b", "c", "cart", "page", "room"))
    await work.run(300)
    await converged(trackers, work.topics, work.rows, timeout=5)
    used = [sum(1 for s in t.status()["shards"] if s["rows"]) for t in trackers]
    assert used == [pool_size] * 3  # every shard carries rows of its own topics
    for t, replay in zip(trackers, replays, strict=True):
        assert replay.problems == []
        await eventually(lambda t=t, r=replay: r.visible == visible_refs(t, work.topics), 0.5)
    ids = {t.replica_id for t in trackers}
    assert all(t.replicas() == dict.fromkeys(ids, "up") for t in trackers)


async def test_a_vanished_replica_is_down_after_down_period_then_replaced(
    make_tracker, redis_server
):
    url = redis_server.url
    a, b, b_refs = await with_rows(make_tracker, url, node_name="node-b")
    seen = Recorder()
    a.subscribe(seen)
    loop = asyncio.get_running_loop()

    await b.stop(graceful=False)  # its tasks cancelled; not a word to the peers
    stopped = loop.time()
    await asyncio.sleep(FAST["down_period"] / 2)
    assert len(a.list("room")) == 6
    await eventually(lambda: a.list("room") == [("a-key", {})], timeout=3)
    elapsed = loop.time() - stopped
    silent = FAST["broadcast_period"] * FAST["max_silent_periods"]
    assert FAST["down_period"] - silent - 0.02 <= elapsed <= FAST["down_period"] + 0.3
    await eventually(lambda: refs(seen.leaves("room")) == b_refs, timeout=0.5)
    assert a.replicas() == {a.replica_id: "up", b.replica_id: "down"}

    # A fresh replica of the same node replaces the old one at once: the old id is
    # purged (not left down until permdown) and the new rows join.
    seen.clear()
    fresh = await make_tracker(redis_url=url, node_name="node-b")
    fresh_ref = await fresh.track("c0", "room", "k0", {"i": "fresh"})
    want = sorted([("a-key", {}), ("k0", {"i": "fresh"})])
    await eventually(lambda: sorted(a.list("room")) == want, timeout=1)
    await eventually(lambda: sorted(fresh.list("room")) == want, timeout=1)
    assert a.replicas() == {a.replica_id: "up", fresh.replica_id: "up"}
    await eventually(lambda: refs(seen.joins()) == {fresh_ref}, timeout=0.5)
    assert seen.leaves() == []  # the old rows had left already, at down


async def test_the_same_identity_back_after_a_silence_brings_its_rows_back(
    make_tracker, redis_server
):
    a, b, b_refs = await with_rows(make_tracker, redis_server.url)
    seen = Recorder()
    a.subscribe(seen)
    publish = b.transport.publish

    async def mute(messages):  # b hears everything but nobody hears b
        return None

    b.transport.publish = mute
    await eventually(lambda: a.list("room") == [("a-key", {})], timeout=3)
    assert a.replicas()[b.replica_id] == "down"
    await eventually(lambda: refs(seen.leaves()) == b_refs, timeout=0.5)
    await b.untrack("c0", "room", "k0")  # a change a did not hear of
    seen.clear()

    b.transport.publish = publish
    want = sorted([("a-key", {})] + [(f"k{i}", {"i": i}) for i in range(1, 5)])
    await eventually(lambda: sorted(a.list("room")) == want, timeout=3)
    assert a.replicas()[b.replica_id] == "up"
    back = {m["ref"] for key, e in a.presence("room").items() if key != "a-key" for m in e["metas"]}
    assert back < b_refs and len(back) == 4
    await eventually(lambda: refs(seen.joins()) - refs(seen.leaves()) == back, timeout=0.5)


async def test_graceful_stop_removes_rows_on_peers_within_one_period(make_tracker, redis_server):
    a, b, b_refs = await with_rows(make_tracker, redis_server.url)
    c = await make_tracker(redis_url=redis_server.url)
    await eventually(lambda: len(c.list("room")) == 6)
    seen = Recorder()
    a.subscribe(seen)
    await b.stop()
    took = await eventually(lambda: a.list("room") == [("a-key", {})], interval=0.002)
    assert took <= FAST["broadcast_period"]
    await eventually(lambda: c.list("room") == [("a-key", {})], timeout=FAST["broadcast_period"])
    await eventually(lambda: refs(seen.leaves()) == b_refs, timeout=0.5)
    assert a.replicas() == {a.replica_id: "up", c.replica_id: "up"}
    await asyncio.sleep(FAST["down_period"])
    assert a.list("room") == c.list("room") == [("a-key", {})]
    assert seen.joins() == []


@pytest.mark.parametrize("outage", ["short", "longer-than-down-period"])
async def test_redis_killed_and_restarted_mid_run(make_tracker, redis_server, outage):
    options = {**FAST, "down_period": 1.0, "permdown_period": 10.0}
    trackers = await start_cluster(make_tracker, 3, redis_url=redis_server.url, **options)
    ids = {t.replica_id for t in trackers}
    work = Workload(trackers, seed=31)
    await work.run(60)
    await converged(trackers, work.topics, work.rows)

    await asyncio.to_thread(redis_server.kill)
    # Changes on every replica while Redis is down: they stay local for now.
    for i, t in enumerate(trackers):
        local = Workload([t], seed=50 + i, labels=[work.labels[i]], model=work)
        for _ in range(8):
            await local.step()
    if outage == "short":
        await asyncio.sleep(0.3)
    else:
        # Long enough for every replica to find the others down: each shows its own rows.
        for t in trackers:
            await converged([t], work.topics, work.owned_by([t]), timeout=3)
            assert t.replicas() == {p: "up" if p == t.replica_id else "down" for p in ids}
    await asyncio.to_thread(redis_server.start)  # the same port

    await converged(trackers, work.topics, work.rows, timeout=10)
    await eventually(lambda: all(t.replicas() == dict.fromkeys(ids, "up") for t in trackers))
    # Every replica publishes and hears again: changes after the restart travel as usual.
    await work.run(30)
    await converged(trackers, work.topics, work.rows, timeout=5)


async def test_thirty_percent_of_heartbeats_dropped_converge_through_transfers(
    make_tracker, redis_server
):
    trackers = await start_cluster(make_tracker, 3, redis_url=redis_server.url)
    counts = [drop_broadcasts(t, 0.3, seed=i) for i, t in enumerate(trackers)]
    work = Workload(trackers, seed=41)
    await work.run(300)
    await converged(trackers, work.topics, work.rows, timeout=10)
    dropped, broadcasts = (sum(c[i] for c in counts) for i in (0, 1))
    assert 0.2 < dropped / broadcasts < 0.4, (dropped, broadcasts)
    stats = [s["stats"] for t in trackers for s in t.status()["shards"]]
    assert sum(s["transfers_received"] for s in stats) > 0
    # And it stays so (no ghost, nothing lost later).
    await asyncio.sleep(0.3)
    await converged(trackers, work.topics, work.rows, timeout=0)


# -- replicas in separate OS processes -----------------------------------------------------


class ReplicaProcess:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.replica: str | None = None

    @classmethod
    async def spawn(cls, url: str, node: str, rows: int, options: dict) -> ReplicaProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.tracker.replica_process",
            url,
            node,
            str(rows),
            json.dumps(options),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def ready(self) -> str:
        self.replica = (await self.read(timeout=20))["replica"]
        return self.replica

    async def read(self, timeout: float = 5.0):  # noqa: ASYNC109
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        assert line, f"replica process exited with {await self.process.wait()}"
        return json.loads(line)

    async def ask(self, command: str):
        self.process.stdin.write(f"{command}\n".encode())
        await self.process.stdin.drain()
        return await self.read()

    def kill(self) -> None:
        if self.process.returncode is None:
            os.kill(self.process.pid, signal.SIGKILL)

    async def close(self) -> int:
        if self.process.returncode is None:
            self.process.stdin.close()
            try:
                return await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.kill()
        return await self.process.wait()


@pytest.fixture
async def spawn():
    started: list[ReplicaProcess] = []

    async def start(*args) -> ReplicaProcess:
        process = await ReplicaProcess.spawn(*args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        await process.process.wait()


async def test_replicas_in_separate_os_processes(make_tracker, redis_server, spawn):
    options = {**FAST, "down_period": 1.0, "permdown_period": 10.0}
    rows = 25
    p1, p2 = [await spawn(redis_server.url, node, rows, options) for node in ("p1", "p2")]
    me = await make_tracker("procs", redis_url=redis_server.url, node_name="me", **options)
    await me.track("me-c", "room", "me-k", {"node": "me"})
    ids = {await p1.ready(), await p2.ready(), me.replica_id}

    def rows_of(*nodes):
        return sorted(
            [(f"{n}-k{i}", {"node": n, "i": i}) for n in nodes for i in range(rows)]
            + [("me-k", {"node": "me"})],
            key=repr,
        )

    def as_json(view):
        return [list(row) for row in view]

    everything = rows_of("p1", "p2")
    await eventually(lambda: sorted(me.list("room"), key=repr) == everything, timeout=10)
    assert me.replicas() == dict.fromkeys(ids, "up")
    # Each process sees the whole cluster too.
    for p in (p1, p2):

        async def sees_all(p=p):
            assert await p.ask("list") == as_json(everything)

        await eventually(sees_all, timeout=10)
        assert await p.ask("replicas") == dict.fromkeys(ids, "up")
    seen = Recorder()
    me.subscribe(seen)

    # SIGKILL one process: its rows leave everywhere after down_period.
    loop = asyncio.get_running_loop()
    p1.kill()
    killed = loop.time()
    await eventually(lambda: sorted(me.list("room"), key=repr) == rows_of("p2"), timeout=5)
    assert loop.time() - killed >= options["down_period"] - 0.15
    assert me.replicas() == {me.replica_id: "up", p2.replica: "up", p1.replica: "down"}
    await eventually(
        lambda: (
            {(r.replica, r.key) for r in seen.leaves()}
            == {(p1.replica, f"p1-k{i}") for i in range(rows)}
        ),
        timeout=0.5,
    )
    assert seen.joins() == []

    async def p2_sees_p1_gone():
        assert await p2.ask("list") == as_json(rows_of("p2"))

    await eventually(p2_sees_p1_gone, timeout=5)

    # The other one ends gracefully: its rows leave at once.
    assert await p2.close() == 0
    await eventually(
        lambda: me.list("room") == [("me-k", {"node": "me"})],
        timeout=FAST["broadcast_period"] + 0.2,
    )
    assert me.replicas() == {me.replica_id: "up", p1.replica: "down"}
