"""Sockets on a cluster node (channels-redis layer) survive being idle.

channels-redis waits for a consumer's next message with a BZPOPMIN that blocks 5 s on the
server; redis-py 8 made client socket reads time out after 5 s by default, so the read
gave up first and every idle websocket was torn down with close code 1011.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daphne_server import DaphneServer, manage, prepare_database, server_env
from tests.live_clients import Visitor
from tests.redis_server import RedisServer

pytestmark = pytest.mark.cluster

# Longer than channels-redis's 5 s blocking wait, with room for Redis's 100 ms timer tick.
IDLE_SECONDS = 6.5


@pytest.fixture
def node(redis_server: RedisServer, tmp_path: Path) -> Iterator[DaphneServer]:
    database = prepare_database(tmp_path / "db.sqlite3")
    manage(
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model; "
        "get_user_model().objects.create_user('idle-staff', password='idle-pw', is_staff=True)",
        env=server_env(tmp_path, database),
    )
    server = DaphneServer(database, redis_url=redis_server.url, var_dir=tmp_path / "node")
    try:
        yield server.start()
    finally:
        server.stop()
        print(f"--- node log:\n{server.logs(80)}")


async def test_idle_shopper_and_staff_sockets_stay_open(node: DaphneServer) -> None:
    shopper, staff = Visitor(node.url), Visitor(node.url)
    await asyncio.to_thread(shopper.get, "/")
    await asyncio.to_thread(staff.login, "idle-staff", "idle-pw")
    item_id = (await asyncio.to_thread(shopper.item_ids, "high"))[0]
    tab = await shopper.open_tab(node, "/idle/")
    view = await staff.open_dashboard(node)
    await view.until(lambda v: v.stats["pages"] == 1, 5, "the shopper's page")

    # Nothing happens for a while; neither socket may be closed meanwhile (`drain` and
    # `next` raise ConnectionError on a closed socket).
    await asyncio.gather(view.drain(IDLE_SECONDS), tab.drain(IDLE_SECONDS))
    assert tab.ws.close_code is None and view.ws.close_code is None

    await tab.request({"type": "add_item", "item_id": item_id})
    assert tab.items == {str(item_id): 1}
    await view.until(lambda v: v.stats["items"] == {str(item_id): 1}, 5, "the added item")
    await tab.close()
    await view.close()
