"""/healthz and /metrics through the project's ASGI application: the process tracker of this
test's loop, real sockets, a real redis-server, and the METRICS guard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator

from shop.asgi import application
from tests.dashboard.conftest import staff_socket_of
from tests.prometheus_text import Scrape
from tests.tracker.conftest import FAST, eventually
from tracker import Tracker
from tracker.process import running_tracker, stop_process_tracker

ROOT = Path(__file__).resolve().parents[2]


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


async def get(
    path: str, client: str = "127.0.0.1", headers: list[tuple[bytes, bytes]] = ()
) -> Response:
    """GET `path` as a server would pass it on from a client at address `client`."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": [client, 50123],
        "server": ["127.0.0.1", 8000],
    }
    communicator = ApplicationCommunicator(application, scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(5)
    body = b""
    while True:
        message = await communicator.receive_output(5)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    return Response(
        start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, body
    )


async def scrape() -> Scrape:
    response = await get("/metrics")
    assert response.status == 200, response.body
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return Scrape(response.body.decode())


@pytest.fixture
async def stops_tracker():
    """Stops this loop's process tracker at the end, whoever started it."""
    yield
    await stop_process_tracker(graceful=False)


@pytest.fixture
def embedded(settings):
    """The embedded default (no Redis), whatever the environment of the test run says."""
    settings.REDIS_URL = None
    settings.TRACKER = {"redis_url": None}
    return settings


# -- /healthz --------------------------------------------------------------------------------


async def test_healthz_starts_the_tracker_and_reports_ok(embedded, stops_tracker):
    assert running_tracker() is None
    response = await get("/healthz")
    assert response.status == 200
    assert "no-cache" in response.headers["cache-control"]
    tracker = running_tracker()
    assert tracker is not None  # started by the request
    body = response.json()
    health = body["tracker"].pop("health")
    assert health["ok"] is True and health["problems"] == []
    assert health["transport"] == {"problem": None, "connected": True}
    assert body == {
        "status": "ok",
        "problems": [],
        "node": tracker.replica_id,
        "tracker": {
            "running": True,
            "transport": "in-process bus (site)",
            "replicas": {tracker.replica_id: "up"},
            "peers_up": 0,
            "peers_down": 0,
        },
        "redis": {"configured": False, "reachable": None},
    }


async def test_healthz_counts_peers_up_and_down_and_stays_ok(embedded, stops_tracker):
    embedded.TRACKER = {"redis_url": None, **FAST}
    node = (await get("/healthz")).json()["node"]
    peer = Tracker("site", **FAST)  # another replica on this loop's in-process bus
    await peer.start()
    try:

        async def peer_up() -> None:
            health = (await get("/healthz")).json()["tracker"]
            assert health["replicas"] == {node: "up", peer.replica_id: "up"}
            assert (health["peers_up"], health["peers_down"]) == (1, 0)

        await eventually(peer_up)
    finally:
        await peer.stop(graceful=False)  # a crash: down after down_period

    async def peer_down() -> None:
        response = await get("/healthz")
        assert response.status == 200  # another node's death is not this node's
        body = response.json()
        assert body["status"] == "ok"
        assert body["tracker"]["replicas"] == {node: "up", peer.replica_id: "down"}
        assert (body["tracker"]["peers_up"], body["tracker"]["peers_down"]) == (0, 1)

    await eventually(peer_down)


async def test_healthz_is_503_when_redis_is_configured_but_dead(
    settings, redis_server, stops_tracker
):
    url = redis_server.url
    redis_server.kill()
    settings.REDIS_URL = url
    settings.TRACKER = {"redis_url": url}
    response = await get("/healthz")
    assert response.status == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["node"] is None
    assert body["problems"][0].startswith(f"tracker not running: cannot reach Redis at {url}")
    assert body["problems"][1].startswith("Redis (REDIS_URL) does not answer: ConnectionError")
    assert body["tracker"] == {
        "running": False,
        "transport": f"redis {url}",
        "replicas": {},
        "peers_up": 0,
        "peers_down": 0,
    }
    assert body["redis"]["configured"] is True
    assert body["redis"]["reachable"] is False
    assert body["redis"]["error"].startswith("ConnectionError: ")
    assert running_tracker() is None

    redis_server.start()  # Redis back: the next probe starts the tracker
    response = await get("/healthz")
    assert response.status == 200
    assert response.json()["node"] == running_tracker().replica_id


async def test_healthz_is_503_when_redis_dies_under_a_running_tracker(
    settings, redis_server, stops_tracker
):
    settings.REDIS_URL = redis_server.url
    settings.TRACKER = {"redis_url": redis_server.url}
    response = await get("/healthz")
    assert response.status == 200
    body = response.json()
    assert body["tracker"]["transport"] == f"redis {redis_server.url}"
    assert body["redis"] == {"configured": True, "reachable": True}

    redis_server.kill()
    response = await get("/healthz")
    assert response.status == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["tracker"]["running"] is True
    assert body["node"] == running_tracker().replica_id
    assert body["redis"]["reachable"] is False
    # The tracker's own connection is dead too, and its PING says so.
    assert any(p.startswith("tracker Redis does not answer") for p in body["problems"])
    assert any(p.startswith("Redis (REDIS_URL) does not answer") for p in body["problems"])


async def test_healthz_shows_only_its_status_to_clients_that_may_not_read_metrics(
    embedded, stops_tracker
):
    embedded.METRICS_ALLOWED_IPS = ["10.0.0.0/8"]
    outsider = await get("/healthz", client="192.0.2.7")
    assert (outsider.status, outsider.json()) == (200, {"status": "ok"})
    insider = await get("/healthz", client="10.2.3.4")
    assert insider.status == 200
    assert set(insider.json()) == {"status", "problems", "node", "tracker", "redis"}

    embedded.METRICS = False
    insider = await get("/healthz", client="10.2.3.4")
    assert (insider.status, insider.json()) == (200, {"status": "ok"})


# -- the guard of /metrics -------------------------------------------------------------------


async def test_metrics_speak_openmetrics_when_asked():
    accept = b"application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    response = await get("/metrics", headers=[(b"accept", accept)])
    assert response.status == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.body.endswith(b"# EOF\n")


async def test_metrics_off_is_404(settings):
    settings.METRICS = False
    assert (await get("/metrics")).status == 404


@pytest.mark.parametrize(
    ("allowed", "client", "status"),
    [
        (["127.0.0.1/32", "::1/128"], "127.0.0.1", 200),
        (["127.0.0.1/32", "::1/128"], "::1", 200),
        (["127.0.0.1/32", "::1/128"], "192.0.2.7", 403),
        (["10.0.0.0/8"], "10.200.0.1", 200),
        (["10.0.0.0/8"], "::ffff:10.200.0.1", 200),  # IPv4 through a dual-stack socket
        (["10.0.0.0/8"], "127.0.0.1", 403),
        (["2001:db8::/32"], "2001:db8::5", 200),
        (["2001:db8::/32"], "2001:db9::5", 403),
        ([], "127.0.0.1", 403),
    ],
)
async def test_metrics_only_to_allowed_addresses(settings, allowed, client, status):
    settings.METRICS = True
    settings.METRICS_ALLOWED_IPS = allowed
    response = await get("/metrics", client=client)
    assert response.status == status
    if status == 200:
        assert Scrape(response.body.decode()).value("tracker_running") == 0  # none started


async def test_metrics_trust_no_forwarded_header(settings):
    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8"]
    claims = [(b"x-forwarded-for", b"10.1.1.1"), (b"x-real-ip", b"10.1.1.1")]
    assert (await get("/metrics", client="192.0.2.7", headers=claims)).status == 403


# -- /metrics after known actions ------------------------------------------------------------


async def test_tracker_families_on_a_running_node(embedded, site_tracker):
    metrics = await scrape()
    status = site_tracker.status()
    assert metrics.value("tracker_running") == 1
    assert metrics.labels("tracker_info") == [
        {
            "tracker": "site",
            "replica": site_tracker.replica_id,
            "transport": "in-process bus (site)",
        }
    ]
    assert metrics.value("tracker_presences", topic="carts") == 0
    assert metrics.value("tracker_owned_presences") == 0
    assert metrics.value("tracker_peers", status="up") == 0
    assert metrics.value("tracker_peers", status="down") == 0
    stats = status["shards"][0]["stats"]
    assert metrics.value("tracker_heartbeats_sent_total", shard="0") == stats["heartbeats_sent"]
    assert stats["heartbeats_sent"] >= 1  # the hello at start
    for family in (
        "tracker_peer_heartbeat_age_seconds",
        "tracker_heartbeats_received",
        "tracker_transfers_requested",
        "tracker_transfers_sent",
        "tracker_transfers_received",
        "tracker_full_transfers_sent",
        "tracker_merge_duration_seconds",
        "tracker_extract_duration_seconds",
        "tracker_sent_bytes",
        "tracker_received_bytes",
        "tracker_publish_failures",
        "shop_open_shopper_sockets",
        "dashboard_open_staff_sockets",
        "dashboard_staff_messages_sent",
        "process_resident_memory_bytes",
        "process_open_fds",
    ):
        assert family in metrics.families, family


@pytest.mark.django_db(transaction=True)
async def test_sockets_presences_and_staff_messages_follow_known_actions(
    catalogue, cart, open_tab, staff, site_tracker
):
    # Socket gauges and message counters belong to the process: count from here.
    before = await scrape()

    def grew(metrics: Scrape, name: str, **labels: str) -> float:
        return metrics.value(name, **labels) - before.value(name, **labels)

    first = await open_tab(cart, page="/")
    await open_tab(cart, page="/checkout/")
    metrics = await scrape()
    assert grew(metrics, "shop_open_shopper_sockets") == 2
    assert metrics.value("tracker_presences", topic="carts") == 2
    assert metrics.value("tracker_owned_presences") == 2

    staff_client = await staff_socket_of(staff)
    connected, _ = await staff_client.connect()
    assert connected
    assert json.loads(await staff_client.receive_from(timeout=3))["type"] == "snapshot"
    metrics = await scrape()
    assert grew(metrics, "dashboard_open_staff_sockets") == 1
    assert grew(metrics, "dashboard_staff_messages_sent_total", type="snapshot") == 1

    await first.request({"type": "add_item", "item_id": catalogue["plenty"].pk})
    diffs = 0
    while True:  # the diffs that bring the staff view the new item
        message = json.loads(await staff_client.receive_from(timeout=3))
        if message["type"] == "diff":
            diffs += 1
            if message["stats"].get("items"):
                break
    assert await staff_client.receive_nothing(timeout=0.3)
    metrics = await scrape()
    assert grew(metrics, "dashboard_staff_messages_sent_total", type="diff") == diffs

    await first.communicator.disconnect()
    metrics = await scrape()
    assert grew(metrics, "shop_open_shopper_sockets") == 1
    assert metrics.value("tracker_presences", topic="carts") == 1

    await staff_client.disconnect()
    metrics = await scrape()
    assert grew(metrics, "dashboard_open_staff_sockets") == 0


# -- the settings, read from the environment -------------------------------------------------


def read_settings(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """Print METRICS and METRICS_ALLOWED_IPS as a fresh process reads them from `env`."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("METRICS")}
    environment.update(env, DJANGO_SETTINGS_MODULE="tests.settings", VAR_DIR=str(tmp_path))
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.METRICS, settings.METRICS_ALLOWED_IPS)"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
    )


def test_metrics_settings_default_on_for_localhost_only(tmp_path):
    result = read_settings(tmp_path)
    assert result.stdout.strip() == "True ['127.0.0.1/32', '::1/128']", result.stderr


def test_metrics_settings_from_the_environment(tmp_path):
    result = read_settings(tmp_path, METRICS="off", METRICS_ALLOWED_IPS=" 10.0.0.0/8, 2001:db8::1 ")
    assert result.stdout.strip() == "False ['10.0.0.0/8', '2001:db8::1/128']", result.stderr


def test_a_bad_allowed_address_stops_the_start(tmp_path):
    result = read_settings(tmp_path, METRICS_ALLOWED_IPS="10.0.0.0/8,intranet")
    assert result.returncode != 0
    assert "METRICS_ALLOWED_IPS must list IP addresses or networks, not 'intranet'" in (
        result.stderr
    )
