"""tracker_list and tracker_status, run as an operator would: a separate process joining a
real Redis-backed cluster as an observer."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from django.conf import settings

from tracker import Tracker
from tracker.process import DEFAULT_NAME

ROOT = Path(__file__).resolve().parents[2]
TIMING = {
    "broadcast_period": 0.05,
    "max_silent_periods": 2,
    "down_period": 0.5,
    "permdown_period": 5,
}


async def manage(*args: str, redis_url: str | None) -> tuple[int, str, str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "REDIS_URL": redis_url or ""}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "manage.py",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def cluster(redis_server):
    # The site's replicas sign their frames with its SECRET_KEY, as the commands expect.
    options = {"redis_url": redis_server.url, "secret": settings.SECRET_KEY, **TIMING}
    trackers = [Tracker(DEFAULT_NAME, **options) for _ in range(2)]
    for t in trackers:
        await t.start()
    yield trackers
    for t in trackers:
        await t.stop()


async def test_tracker_list_prints_every_presence_grouped_by_key(cluster, redis_server):
    a, b = cluster
    await a.track("conn-1", "carts", "cart-a", {"page": "/"})
    await b.track("conn-2", "carts", "cart-a", {"page": "/products/x/"})
    await b.track("conn-3", "carts", "cart-b", {"page": "/checkout/"})
    await b.track("conn-4", "rooms", "lobby", {"n": 1})
    await b.untrack("conn-4", "rooms", "lobby")

    code, out, err = await manage("tracker_list", "carts", "--json", redis_url=redis_server.url)
    assert code == 0, err
    view = json.loads(out)
    assert view["synced"] is True
    assert set(view["replicas"]) == {a.replica_id, b.replica_id}
    carts = view["topics"]["carts"]
    assert {key: sorted(m["page"] for m in entry["metas"]) for key, entry in carts.items()} == {
        "cart-a": ["/", "/products/x/"],
        "cart-b": ["/checkout/"],
    }
    assert all(
        m["ref"].startswith((a.replica_id, b.replica_id))
        for e in carts.values()
        for m in e["metas"]
    )

    code, out, err = await manage("tracker_list", redis_url=redis_server.url)
    assert code == 0, err
    assert "2 replica(s) up, 0 down" in out
    assert "carts: 2 key(s), 3 presence(s)" in out
    assert "rooms" not in out  # untracked rows are gone
    assert "page=/checkout/" in out


async def test_tracker_status_shows_replicas_clocks_rows_and_down_peers(cluster, redis_server):
    a, b = cluster
    for i in range(3):
        await a.track(f"conn-{i}", "carts", f"cart-{i}", {})
    await b.track("conn-x", "carts", "cart-x", {})
    await a.untrack("conn-0", "carts", "cart-0")
    code, out, err = await manage("tracker_status", "--json", redis_url=redis_server.url)
    assert code == 0, err
    peers = json.loads(out)["shards"][0]["replicas"]
    assert peers[a.replica_id]["status"] == "up"
    assert peers[a.replica_id]["clock"] == 4  # three joins and a leave
    assert peers[a.replica_id]["rows"] == 2
    assert peers[b.replica_id]["rows"] == 1
    assert peers[a.replica_id]["last_heartbeat_age"] < 1.0

    # A replica that vanished without a word is still listed, as down, by a peer; an
    # observer that joins later never heard it and does not list it at all.
    await b.stop(graceful=False)
    await asyncio.sleep(0.8)
    assert a.replicas()[b.replica_id] == "down"
    code, out, err = await manage("tracker_status", redis_url=redis_server.url)
    assert code == 0, err
    assert a.replica_id in out and b.replica_id not in out
    assert "1 replica(s)" in out


async def test_tracker_status_names_peers_it_refuses(cluster, redis_server):
    """A replica of another shard count (or, alike, another protocol version or secret)
    never joins: the operator sees it refused, and why."""
    odd = Tracker(
        DEFAULT_NAME,
        redis_url=redis_server.url,
        secret=settings.SECRET_KEY,
        pool_size=2,
        **TIMING,
    )
    await odd.start()
    try:
        code, out, err = await manage("tracker_status", redis_url=redis_server.url)
    finally:
        await odd.stop()
    assert code == 0, err
    assert f"refused peer {odd.replica_id}: it has 2 shards, we have 1" in out
    assert odd.replica_id not in out.split("refused peer")[0]  # not listed as a replica


async def test_commands_fail_clearly_when_redis_is_unreachable(redis_server):
    url = redis_server.url
    redis_server.kill()
    for command in ("tracker_list", "tracker_status"):
        code, out, err = await manage(command, redis_url=url)
        assert code == 1
        assert f"cannot reach Redis at {url}" in err
        assert "Traceback" not in err


async def test_commands_explain_that_the_embedded_tracker_cannot_be_observed():
    code, out, err = await manage("tracker_list", redis_url=None)
    assert code == 1
    assert "REDIS_URL is not set" in err
