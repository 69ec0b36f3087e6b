"""Shared helpers for the tracker runtime tests: fast timings, a polling wait, views of a
tracker's rows, a diff recorder, and a factory fixture that stops every tracker it made."""

from __future__ import annotations

import asyncio
import inspect
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
    for tracker in made:
        if tracker.running:
            await tracker.stop(graceful=False)
    await asyncio.sleep(0)
    leaked = [
        task.get_name()
        for task in asyncio.all_tasks()
        if task.get_name().startswith("tracker") and not task.done()
    ]
    assert not leaked, f"tracker tasks outlived their trackers: {leaked}"
