"""An open websocket keeps nothing of its handshake (shop/websockets.py), in a real
daphne process: no HTTP channel (with its upgrade request) per open socket."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster.faults import Cluster, new_shopper
from tests.cluster.test_gc_tuning import PROBE, census, once_started

pytestmark = pytest.mark.cluster

TABS = 12


async def test_open_sockets_keep_no_http_channel(
    fault_cluster: Cluster, tmp_path: Path
) -> None:
    probe = tmp_path / "census.json"
    node = fault_cluster.node("mem", env={"PYTHONPATH": str(PROBE), "GC_PROBE": str(probe)})
    once_started(node)
    shopper = await new_shopper(node)
    tabs = [await shopper.open_tab(node, f"/p{i}/") for i in range(TABS)]

    live = census(node, probe, after=0)["live"]

    assert live.get("shop.consumers.ShoppingCartConsumer") == TABS
    assert live.get("daphne.ws_protocol.WebSocketProtocol", 0) >= TABS
    assert live.get("twisted.web.http.HTTPChannel", 0) < TABS
    for tab in tabs:
        await tab.close()


def test_autobahn_formats_its_configuration_only_for_debug_logs() -> None:
    import txaio
    from autobahn.websocket import protocol

    from shop import websockets

    websockets.apply()
    level = txaio.get_global_log_level()
    try:
        txaio.set_global_log_level("info")
        assert protocol.pformat([("autoPingInterval", 20)]) == ""
        txaio.set_global_log_level("debug")
        assert protocol.pformat([("autoPingInterval", 20)]) == "[('autoPingInterval', 20)]"
    finally:
        txaio.set_global_log_level(level)
