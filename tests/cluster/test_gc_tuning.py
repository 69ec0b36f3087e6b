"""The site's GC policy in real daphne processes (shop/gc_tuning.py, issue 9): on by default,
configurable, visible in /metrics, and safe to freeze with: a closed socket leaves no cyclic
garbage behind, so objects frozen while it was open are freed when it closes."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from tests.cluster.faults import SETTLE_SECONDS, Cluster, new_shopper, open_staff
from tests.daphne_server import DaphneServer
from tests.prometheus_text import Scrape

pytestmark = pytest.mark.cluster

PROBE = Path(__file__).resolve().parent.parent / "gc_probe"
PYTHON_DEFAULT_THRESHOLD = (700, 10, 10)  # CPython 3.11's gc.get_threshold() at start
# Daphne lets go of a closed connection once its application instance has ended, and
# cancels one that has not after this long (its --application-close-timeout).
DAPHNE_CLOSE_TIMEOUT = 10


def scrape(node: DaphneServer) -> Scrape:
    with urllib.request.urlopen(node.url + "/metrics", timeout=10) as response:
        return Scrape(response.read().decode())


def once_started(node: DaphneServer) -> Scrape:
    """/metrics once the site's start-up hook has run (it starts recording pauses, and
    young collections happen all the time)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while (metrics := scrape(node)).value("gc_pause_seconds_count", generation="0") == 0:
        assert time.monotonic() < deadline, "the site's start-up hook never ran"
        time.sleep(0.1)
    return metrics


def thresholds(metrics: Scrape) -> tuple[int, ...]:
    return tuple(int(metrics.value("gc_threshold", generation=str(g))) for g in range(3))


def test_the_policy_is_on_by_default_with_the_sites_thresholds(fault_cluster: Cluster) -> None:
    metrics = once_started(fault_cluster.node("default"))
    assert metrics.value("gc_tuning") == 1
    assert thresholds(metrics) == (700, 10, 2)  # GC_THRESHOLD's default
    # The start-up freeze: Django, the apps and the tracker are in the permanent generation.
    assert metrics.value("gc_freezes_total", when="start-up") == 1
    assert metrics.value("gc_frozen_objects") > 10_000


def test_thresholds_come_from_the_environment(fault_cluster: Cluster) -> None:
    metrics = once_started(fault_cluster.node("tuned", env={"GC_THRESHOLD": "900,12,3"}))
    assert metrics.value("gc_tuning") == 1
    assert thresholds(metrics) == (900, 12, 3)


def test_off_leaves_pythons_defaults_and_still_measures_pauses(fault_cluster: Cluster) -> None:
    metrics = once_started(fault_cluster.node("off", env={"GC_TUNING": "off"}))
    assert metrics.value("gc_tuning") == 0
    assert thresholds(metrics) == PYTHON_DEFAULT_THRESHOLD
    assert metrics.value("gc_frozen_objects") == 0
    for when in ("start-up", "quiet", "forced"):
        assert metrics.value("gc_freezes_total", when=when) == 0
    young = metrics.value("gc_pause_seconds_count", generation="0")
    assert metrics.value("gc_pause_seconds_bucket", generation="0", le="+Inf") == young
    assert metrics.value("gc_pause_max_seconds", generation="0") > 0


def census(node: DaphneServer, path: Path, after: int) -> dict:
    """The probe's next census of the server's garbage (tests/gc_probe/sitecustomize.py)."""
    node.process.send_signal(signal.SIGUSR2)
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        try:
            report = json.loads(path.read_text())
            if report["census"] > after:
                return report
        except (OSError, ValueError):
            pass
        assert time.monotonic() < deadline, "the probe did not answer"
        time.sleep(0.05)


async def test_closed_sockets_leave_no_cyclic_garbage_even_when_frozen(
    fault_cluster: Cluster, tmp_path: Path
) -> None:
    probe = tmp_path / "census.json"
    node = fault_cluster.node("gc", env={"PYTHONPATH": str(PROBE), "GC_PROBE": str(probe)})
    once_started(node)
    shoppers = [await new_shopper(node) for _ in range(20)]
    staff, first_view = await open_staff(node)
    await first_view.close()  # warm-up: the code paths of both sockets have run once

    tabs = [await shopper.open_tab(node, f"/p{i}/") for shopper in shoppers for i in range(5)]
    views = [await staff.open_dashboard(node) for _ in range(5)]
    # A census ends with a full collection, after which the policy freezes every survivor:
    # these sockets' objects are frozen from here on.
    report = census(node, probe, after=0)
    assert report["live"]["daphne.ws_protocol.WebSocketProtocol"] >= len(tabs) + len(views)
    assert report["live"]["shop.consumers.ShoppingCartConsumer"] == len(tabs)
    frozen_with_sockets = scrape(node).value("gc_frozen_objects")

    for socket in [*tabs, *views]:  # one by one, as people leave
        await socket.close()
    # Until daphne has let go of every closed connection, sum what each census finds:
    # garbage is freed by the census that counts it.
    garbage: dict[str, int] = {}
    deadline = time.monotonic() + DAPHNE_CLOSE_TIMEOUT + SETTLE_SECONDS
    while True:
        report = census(node, probe, after=report["census"])
        for kind, count in report["garbage"].items():
            garbage[kind] = garbage.get(kind, 0) + count
        if not any(report["live"].values()):
            break
        assert time.monotonic() < deadline, f"still alive: {report['live']}"
        await asyncio.sleep(1)

    closed = len(tabs) + len(views)
    # A reference cycle per socket would leave at least one object of some type per socket
    # (without the cycle breaker: a WebSocketProtocol, an HTTPChannel, a WebRequest ...).
    per_socket = {kind: count for kind, count in garbage.items() if count >= closed}
    assert not per_socket, f"cyclic garbage left by {closed} closed sockets: {per_socket}"
    watched = {kind: count for kind, count in garbage.items() if kind in report["live"]}
    assert not watched, f"sockets' objects found as cyclic garbage: {watched}"
    # Freed by reference counting instead: the permanent generation shrank.
    assert scrape(node).value("gc_frozen_objects") < frozen_with_sockets
