"""When the site's GC policy freezes (shop/gc_tuning.py), decided by a collector of its own
whose freeze and collect are recorded instead of run (freezing pytest's heap would change
how every later test's garbage is collected)."""

from __future__ import annotations

import asyncio

import pytest

from shop.gc_tuning import FORCE_AFTER, _Collector, counting_requests


def recording_collector() -> tuple[_Collector, list[str]]:
    calls: list[str] = []
    collector = _Collector(freeze=lambda: calls.append("freeze"),
                           collect=lambda: calls.append("collect"))  # fmt: skip
    collector.tuning = True
    return collector, calls


def collection(collector: _Collector, generation: int) -> None:
    collector.on_gc("start", {"generation": generation})
    collector.on_gc("stop", {"generation": generation, "collected": 0, "uncollectable": 0})


def test_a_full_collection_with_no_request_in_flight_freezes_its_survivors():
    collector, calls = recording_collector()
    collection(collector, 0)
    collection(collector, 1)
    assert calls == []  # young collections never freeze
    collection(collector, 2)
    assert calls == ["freeze"]
    assert collector.freezes == {"start-up": 0, "quiet": 1, "forced": 0}
    assert collector.count == [1, 1, 1]


def test_the_freeze_waits_for_the_requests_in_flight_then_a_quiet_pass_pays_it():
    collector, calls = recording_collector()
    collector.request_started()
    collector.request_started()
    collection(collector, 2)
    assert calls == [] and collector.owed == 1
    collector.request_finished()
    assert calls == []  # one request still in flight
    collector.request_finished()
    assert calls == ["collect"]  # a full pass now: it ends quiet, so it freezes
    collection(collector, 2)
    assert calls == ["collect", "freeze"] and collector.owed == 0
    collector.request_started()
    collector.request_finished()
    assert calls == ["collect", "freeze"]  # nothing owed: no extra pass


def test_a_node_never_without_requests_freezes_after_force_after_passes():
    collector, calls = recording_collector()
    collector.request_started()
    for _ in range(FORCE_AFTER - 1):
        collection(collector, 2)
    assert calls == []
    collection(collector, 2)
    assert calls == ["freeze"]
    assert collector.freezes["forced"] == 1 and collector.owed == 0


def test_off_it_only_measures():
    collector, calls = recording_collector()
    collector.tuning = False
    collection(collector, 2)
    collector.request_started()
    collector.request_finished()
    assert calls == [] and collector.count == [0, 0, 1]


async def test_the_http_application_counts_its_requests_until_they_end_even_badly():
    collector, calls = recording_collector()
    seen: list[int] = []

    async def app(scope, receive, send) -> None:
        seen.append(collector.in_flight)
        await asyncio.sleep(0)
        if scope["path"] == "/boom":
            raise RuntimeError("boom")

    counted = counting_requests(app, collector)
    await asyncio.gather(counted({"path": "/a"}, None, None), counted({"path": "/b"}, None, None))
    assert seen == [1, 2] and collector.in_flight == 0
    with pytest.raises(RuntimeError):
        await counted({"path": "/boom"}, None, None)
    assert collector.in_flight == 0
