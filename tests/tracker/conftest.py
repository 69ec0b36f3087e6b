"""Shared helpers for the tracker runtime tests: fast timings, a polling wait, views of a
tracker's rows, a diff recorder, and a factory fixture that stops every tracker it made."""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import Callable
from typing import Any

import pytest

from tracker import Tracker

# Short timings so that down detection and repairs happen within a second.
FAST: dict[str, Any] = {
    "broadcast_period": 0.05,
    "max_silent_periods": 2,  # an empty heartbeat every 0.1 s at the least
    "down_period": 0.5,
    "permdown_period": 2.0,
    "clock_sample_periods": 2,
}


async def eventually(
    check: Callable[[], Any],
    timeout: float = 5.0,  # noqa: ASYNC109 (a polling deadline, as the tests read best)
    interval: float = 0.01,
    message: str | Callable[[], str] = "",
) -> float:
    """Poll `check` until it returns something other than False without raising
    AssertionError; returns the seconds it took. On timeout, raises the last
    AssertionError, or one that says what was waited for."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + timeout
    while True:
        error: AssertionError | None = None
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result is not False:
                return loop.time() - started
        except AssertionError as caught:
            error = caught
        if loop.time() >= deadline:
            if error is not None:
                raise error
            text = message() if callable(message) else message
            raise AssertionError(f"not true within {timeout} s: {text or check}")
        await asyncio.sleep(interval)


def freeze(meta: dict[str, Any]) -> tuple:
    return tuple(sorted((k, freeze(v) if isinstance(v, dict) else v) for k, v in meta.items()))


def view(tracker: Tracker, topic: str) -> list[tuple[str, tuple]]:
    """A tracker's rows on `topic` as a sorted list (duplicates stay visible)."""
    return sorted((key, freeze(meta)) for key, meta in tracker.list(topic))


def expected_view(rows: dict[tuple, dict[str, Any]], topic: str) -> list[tuple[str, tuple]]:
    """The view that `rows` {(topic, conn, key): meta} should produce on `topic`."""
    return sorted((key, freeze(meta)) for (t, _conn, key), meta in rows.items() if t == topic)


async def converged(trackers, topics, rows, timeout: float = 5.0) -> float:  # noqa: ASYNC109
    """Wait until every tracker shows exactly `rows` on every topic."""

    def check() -> None:
        for topic in topics:
            want = expected_view(rows, topic)
            for t in trackers:
                got = view(t, topic)
                assert got == want, (
                    f"{t.replica_id} on {topic!r}:\n missing {sorted(set(want) - set(got))}\n"
                    f" extra {sorted(set(got) - set(want))}\n"
                    f" {len(got)} rows, {len(want)} expected"
                )

    return await eventually(check, timeout=timeout)


class Recorder:
    """A subscriber that keeps every diff it was given."""

    def __init__(self) -> None:
        self.diffs: list[dict] = []

    def __call__(self, diff: dict) -> None:
        for topic, (joins, leaves) in diff.items():
            assert all(row.topic == topic for row in joins + leaves)
            assert not set(map(id, joins)) & set(map(id, leaves)), "joins and leaves overlap"
        self.diffs.append(diff)

    def joins(self, topic: str | None = None) -> list:
        return [
            row
            for diff in self.diffs
            for t, (joins, _) in diff.items()
            if topic is None or t == topic
            for row in joins
        ]

    def leaves(self, topic: str | None = None) -> list:
        return [
            row
            for diff in self.diffs
            for t, (_, leaves) in diff.items()
            if topic is None or t == topic
            for row in leaves
        ]

    def clear(self) -> None:
        self.diffs.clear()


def refs(rows) -> set[str]:
    return {row.ref for row in rows}


class Workload:
    """Random tracks, updates, untracks and conn exits on a set of replicas, next to the
    model of what every replica should end up showing: `rows` {(topic, conn, key): meta},
    and `owner` {(topic, conn, key): replica id}. Workloads may share one model."""

    def __init__(self, trackers, seed: int, *, labels=None, model=None, topics=None) -> None:
        self.trackers = list(trackers)
        self.labels = labels or [f"r{i}" for i in range(len(self.trackers))]
        self.rng = random.Random(seed)
        self.topics = tuple(topics or (model.topics if model else ("t0", "t1", "t2")))
        self.rows: dict[tuple[str, str, str], dict] = model.rows if model else {}
        self.owner: dict[tuple[str, str, str], str] = model.owner if model else {}
        self.n = 1000 * seed

    async def step(self) -> None:
        rng = self.rng
        index = rng.randrange(len(self.trackers))
        tracker = self.trackers[index]
        conn = f"{self.labels[index]}-c{rng.randrange(4)}"  # a conn lives on one replica
        topic, key = rng.choice(self.topics), f"k{rng.randrange(3)}"
        self.n += 1
        meta = {"conn": conn, "n": self.n}
        row = (topic, conn, key)
        if row not in self.rows:
            await tracker.track(conn, topic, key, meta)
            self.rows[row] = meta
            self.owner[row] = tracker.replica_id
            return
        roll = rng.random()
        if roll < 0.4:
            await tracker.untrack(conn, topic, key)
            del self.rows[row], self.owner[row]
        elif roll < 0.85:
            await tracker.update(conn, topic, key, meta)
            self.rows[row] = meta
        else:
            await tracker.untrack_all(conn)
            for gone in [r for r in self.rows if r[1] == conn]:
                del self.rows[gone], self.owner[gone]

    async def run(self, steps: int, pause: float = 0.03) -> None:
        for _ in range(steps):
            await self.step()
            if self.rng.random() < 0.2:
                await asyncio.sleep(self.rng.uniform(0, pause))

    def owned_by(self, trackers) -> dict:
        ids = {t.replica_id for t in trackers}
        return {row: meta for row, meta in self.rows.items() if self.owner[row] in ids}


class Replay:
    """A subscriber that replays diffs into the set of visible rows, as (topic, ref), and
    notes every inconsistency: a join of a row already visible, a leave of one that is
    not. (Refs are unique per topic; with pool_size > 1 two topics on different shards
    can carry the same ref, see test_refs_are_unique_across_shards.)"""

    def __init__(self) -> None:
        self.visible: set[tuple[str, str]] = set()
        self.problems: list[str] = []

    def __call__(self, diff) -> None:
        for topic, (joins, leaves) in diff.items():
            for row in leaves:
                if (topic, row.ref) not in self.visible:
                    self.problems.append(f"leave of invisible {row!r}")
                self.visible.discard((topic, row.ref))
            for row in joins:
                if (topic, row.ref) in self.visible:
                    self.problems.append(f"second join of {row!r}")
                self.visible.add((topic, row.ref))


def visible_refs(tracker, topics) -> set[tuple[str, str]]:
    """Every visible row of `topics` on `tracker`, as (topic, ref)."""
    return {
        (topic, meta["ref"])
        for topic in topics
        for entry in tracker.presence(topic).values()
        for meta in entry["metas"]
    }


async def start_cluster(make_tracker, n, **options):
    """n replicas (same options), started and seeing each other up."""
    trackers = [await make_tracker(**options) for _ in range(n)]
    ids = {t.replica_id for t in trackers}
    await eventually(lambda: all(set(t.replicas()) == ids for t in trackers))
    return trackers


@pytest.fixture
async def make_tracker():
    """`await make_tracker(name, bus=..., **options)`: a started Tracker with FAST timings,
    stopped (without a goodbye) at the end of the test, which then checks that no tracker
    task outlived it."""
    made: list[Tracker] = []

    async def make(name: str = "t", *, start: bool = True, **options: Any) -> Tracker:
        tracker = Tracker(name, **{**FAST, **options})
        made.append(tracker)
        if start:
            await tracker.start()
        return tracker

    yield make
    hung = []
    for tracker in made:
        if tracker.running:
            try:
                await asyncio.wait_for(tracker.stop(graceful=False), 10)
            except TimeoutError:
                hung.append(tracker.replica_id)
                for task in asyncio.all_tasks():
                    task.print_stack(limit=12)
    assert not hung, f"stop(graceful=False) hung for {hung}"
    await asyncio.sleep(0)
    leaked = [
        task.get_name()
        for task in asyncio.all_tasks()
        if task.get_name().startswith("tracker") and not task.done()
    ]
    assert not leaked, f"tracker tasks outlived their trackers: {leaked}"
