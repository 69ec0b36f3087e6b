"""Stock levels reach every page of every node through the node-local fan-out (issue 12):
real daphne nodes, a real redis-server, SQLite then PostgreSQL.

A stock change is made by a checkout on one node or by an edit in another process (what the
admin does: `Item.save()`, here in `manage.py shell`); each node reads the new level once
and writes it to each of its pages, in order; a node's bus that lost Redis resubscribes, and
a page that reconnects after an outage gets the levels it missed.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request

import pytest

from tests.cluster.faults import SETTLE_SECONDS, Cluster, new_shopper, retrying
from tests.daphne_server import DaphneServer, Database, manage, server_env
from tests.live_clients import CSRF_INPUT, Tab, Visitor
from tests.prometheus_text import Scrape

pytestmark = pytest.mark.cluster


def checkout(shopper: Visitor) -> None:
    """Buy the cart through the checkout form."""
    page = shopper.get("/checkout/")
    token = CSRF_INPUT.search(page)
    assert token is not None, "no CSRF token on the checkout page"
    shopper.post("/checkout/", {"csrfmiddlewaretoken": token[1]})


async def fill_with_the_last_units(tab: Tab, item_id: int) -> int:
    """Add units of the item until none is left; returns how many the cart holds."""
    held = 0
    while True:
        request_id = await tab.send({"type": "add_item", "item_id": item_id})
        while True:
            message = await tab._take(SETTLE_SECONDS)
            if message.get("request_id") == request_id:
                break
        if message["type"] == "error":
            assert message["code"] == "out_of_stock", message
            return held
        held += 1


def set_stock(cluster: Cluster, item_id: int, stocks: list[int]) -> None:
    """Save the item with each stock in turn, in a process of its own (as the admin's
    change list does: Item.save(), each its own commit)."""
    script = (
        "from shop.models import Item\n"
        f"for stock in {stocks!r}:\n"
        f"    item = Item.objects.get(pk={item_id})\n"
        "    item.stock = stock\n"
        "    item.save()\n"
    )
    env = server_env(cluster.tmp_path, cluster.database, cluster.redis.url)
    manage("shell", "-c", script, env=env)


async def test_a_checkout_on_one_node_updates_the_level_on_every_page_of_both(
    fault_cluster: Cluster,
) -> None:
    a, b = fault_cluster.node("a"), fault_cluster.node("b")
    buyer, onlooker_a, onlooker_b = await asyncio.gather(
        new_shopper(a), new_shopper(a), new_shopper(b)
    )
    item = (await asyncio.to_thread(buyer.item_ids, "low"))[0]
    tabs = [
        await buyer.open_tab(a, "/"),
        await onlooker_a.open_tab(a, "/"),
        await onlooker_b.open_tab(b, "/"),
    ]
    assert await fill_with_the_last_units(tabs[0], item) >= 1
    await asyncio.to_thread(checkout, buyer)
    for tab in tabs:
        await tab.until_level(item, "out", SETTLE_SECONDS)
    for tab in tabs:
        await tab.drain(0.5)
        assert tab.stock == [(item, "out")], "one push per page, no echo from the other node"
    # Under daphne each frame is written straight to the socket, none through the ASGI send.
    for node, pages in ((a, 2), (b, 1)):
        scrape = await asyncio.to_thread(metrics, node)
        assert scrape.value("shop_fanout_frames_total", path="direct") == pages
        assert scrape.value("shop_fanout_frames_total", path="asgi") == 0


def metrics(node: DaphneServer) -> Scrape:
    with urllib.request.urlopen(node.url + "/metrics", timeout=10) as response:
        return Scrape(response.read().decode())


async def test_changes_made_elsewhere_reach_each_page_of_both_nodes_in_order(
    fault_cluster: Cluster,
) -> None:
    a, b = fault_cluster.node("a"), fault_cluster.node("b")
    shoppers = await asyncio.gather(new_shopper(a), new_shopper(a), new_shopper(b))
    item = (await asyncio.to_thread(shoppers[0].item_ids, "high"))[0]
    tabs = [
        await shoppers[0].open_tab(a, "/"),
        await shoppers[1].open_tab(a, "/checkout/"),
        await shoppers[2].open_tab(b, "/"),
    ]
    stocks = [8, 2, 0, 15, 5, 1]
    committed = ["medium", "low", "out", "high", "medium", "low"]
    await asyncio.to_thread(set_stock, fault_cluster, item, stocks)
    for tab in tabs:
        await tab.until_level(item, "low", SETTLE_SECONDS)
        await tab.drain(0.5)
    for tab in tabs:
        seen = [level for item_id, level in tab.stock if item_id == item]
        # Each node reads the level when it hears of a change, so changes that follow each
        # other fast may be seen as the later one (once or twice); never out of order, and
        # ending on the last one.
        distinct = [level for index, level in enumerate(seen) if seen[index - 1 : index] != [level]]
        assert is_subsequence(distinct, committed), (seen, committed)
        assert seen[-1] == "low"


def is_subsequence(seen: list[str], sequence: list[str]) -> bool:
    rest = iter(sequence)
    return all(level in rest for level in seen)


async def test_the_embedded_default_pushes_to_its_own_pages(server_database: Database) -> None:
    with DaphneServer(server_database) as node:
        buyer, onlooker = await asyncio.gather(new_shopper(node), new_shopper(node))
        item = (await asyncio.to_thread(buyer.item_ids, "low"))[0]
        tabs = [await buyer.open_tab(node, "/"), await onlooker.open_tab(node, "/p/")]
        assert await fill_with_the_last_units(tabs[0], item) >= 1
        await asyncio.to_thread(checkout, buyer)
        for tab in tabs:
            await tab.until_level(item, "out", SETTLE_SECONDS)
        late = await onlooker.open_tab(node, "/", levels=True)
        assert late.levels[item] == "out"


async def test_after_a_redis_restart_pages_catch_up_and_pushes_flow_again(
    fault_cluster: Cluster,
) -> None:
    a, b = fault_cluster.node("a"), fault_cluster.node("b")
    shopper_a, shopper_b = await asyncio.gather(new_shopper(a), new_shopper(b))
    first, second = (await asyncio.to_thread(shopper_a.item_ids, "high"))[:2]
    tab_a = await shopper_a.open_tab(a, "/", levels=True)
    tab_b = await shopper_b.open_tab(b, "/", levels=True)
    assert tab_a.levels[first] == tab_b.levels[first] == "high"

    fault_cluster.redis.kill()
    # Committed while Redis is away: its push is lost (the shell logs it and goes on).
    await asyncio.to_thread(set_stock, fault_cluster, first, [2])
    await asyncio.sleep(1.0)
    fault_cluster.redis.start()  # the same port, empty

    async def page(tab: Tab, shopper: Visitor, node: DaphneServer) -> Tab:
        """The page as its script keeps it: reconnected (with levels=1) if it was closed."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while tab.open and tab.levels.get(first) != "low" and time.monotonic() < deadline:
            try:
                await tab._take(0.2)
            except (TimeoutError, ConnectionError):
                pass
        if tab.open:
            return tab
        await tab.abort()
        return await retrying(
            lambda within: shopper.open_tab(node, "/", within, levels=True), SETTLE_SECONDS
        )

    tab_a, tab_b = await asyncio.gather(page(tab_a, shopper_a, a), page(tab_b, shopper_b, b))
    for tab in (tab_a, tab_b):
        await tab.until_level(first, "low", SETTLE_SECONDS)
    # Both nodes' buses are subscribed again: a change from anywhere reaches both.
    await asyncio.to_thread(set_stock, fault_cluster, second, [0])
    for tab in (tab_a, tab_b):
        await tab.until_level(second, "out", SETTLE_SECONDS)
