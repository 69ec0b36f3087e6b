"""Redis dies for 5 s and comes back on the same port (issue 5, fault test 3): both nodes
reconnect, their trackers converge, and both staff views show exactly what the shoppers
hold afterwards, including what changed while Redis was away.

What an outage does to this stack (seen, not assumed): channels-redis's receive fails in
every consumer, so each node closes every shopper and staff socket at once (1011); the
first handshakes after Redis returns may fail too (connections pooled before the outage
are dead). Browsers reconnect: cart.js and dashboard.js retry with a backoff, and so do
the clients here, until a bounded deadline. Meanwhile the trackers are cut off from each
other: each marks the other down after down_period, loses the heartbeats it publishes, and
must repair all of it by transfers after it reconnects.

While Redis is down: one shopper goes away for good, one checks out over HTTP (the
purchase is committed; telling the cart's tabs fails with Redis, hence the 500); the others
come back after the outage, one more arrives, and one adds an item.

Timings: broadcast 0.05 s, down 1.0 s, permdown 120 s, staff diffs 0.05 s
(tests/cluster/faults.py); the tracker's reconnect backoff is capped at 2 s.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.error
import urllib.request

import pytest

from tests.cluster.faults import (
    DOWN_PERIOD,
    SETTLE_SECONDS,
    Cluster,
    new_shopper,
    open_staff,
    replica_names,
    retrying,
    stays_exact,
    until_exact,
)
from tests.daphne_server import DaphneServer
from tests.live_clients import StaffClient, Tab, Visitor, truth_of
from tests.prometheus_text import Scrape

pytestmark = pytest.mark.cluster

OUTAGE_SECONDS = 5.0
# After Redis returns: the trackers' reconnect backoff (at most 2 s), the clients' own
# reconnect attempts (a failed handshake costs up to 3 s) and a few transfers.
RECOVERY_SECONDS = 15.0
# The channel layer's socket timeout (shop/settings.py) and a margin.
GAUGE_SETTLE_SECONDS = 20.0
CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


async def reopen(shopper: Visitor, node: DaphneServer, page: str) -> Tab:
    return await retrying(lambda within: shopper.open_tab(node, page, within), RECOVERY_SECONDS)


async def reopen_staff(staff: Visitor, node: DaphneServer) -> StaffClient:
    return await retrying(lambda within: staff.open_dashboard(node, within), RECOVERY_SECONDS)


def checkout(shopper: Visitor) -> int:
    """Buy the cart through the checkout form; the HTTP status."""
    page = shopper.get("/checkout/")
    token = CSRF_INPUT.search(page)
    assert token is not None, "no CSRF token on the checkout page"
    try:
        shopper.post("/checkout/", {"csrfmiddlewaretoken": token[1]})
    except urllib.error.HTTPError as error:
        return error.code
    return 200


async def test_redis_down_for_5_s_then_back_nodes_reconnect_and_staff_counts_are_exact(
    fault_cluster: Cluster,
) -> None:
    redis = fault_cluster.redis
    a, b = fault_cluster.node("a"), fault_cluster.node("b")
    staff, view_a = await open_staff(a)
    _, view_b = await open_staff(b, staff)

    one, two, three, four = await asyncio.gather(
        new_shopper(a), new_shopper(a), new_shopper(b), new_shopper(b)
    )
    first, second = (await asyncio.to_thread(one.item_ids, "high"))[:2]
    one_a, one_b = await one.open_tab(a, "/x/"), await one.open_tab(b, "/y/")
    two_a, three_b, four_b = (
        await two.open_tab(a, "/x/"),
        await three.open_tab(b, "/z/"),
        await four.open_tab(b, "/"),
    )
    await one_a.request({"type": "add_item", "item_id": first})
    await one_b.until_items(one_a.items, SETTLE_SECONDS)
    await two_a.request({"type": "add_item", "item_id": first})
    await two_a.request({"type": "add_item", "item_id": second})
    await three_b.request({"type": "add_item", "item_id": second})
    before = [one_a, one_b, two_a, three_b, four_b]
    for view in (view_a, view_b):
        await until_exact(view, before, SETTLE_SECONDS, "every shopper before the outage")

    # -- the outage ---------------------------------------------------------------------
    redis.kill()
    down_at = time.monotonic()
    await three_b.abort()  # gone for good while Redis is away
    status = await asyncio.to_thread(checkout, two)  # committed; publishing it fails
    assert status in (200, 500), status
    await asyncio.sleep(OUTAGE_SECONDS - (time.monotonic() - down_at))
    closed = [tab for tab in (one_a, one_b, two_a, four_b) if not tab.open]
    staff_closed = [view for view in (view_a, view_b) if not view.open]
    print(
        f"Redis down {time.monotonic() - down_at:.2f} s: the nodes closed {len(closed)} of 4 "
        f"shopper sockets and {len(staff_closed)} of 2 staff sockets"
    )
    redis.start()  # same port, empty: no persistence
    back = time.perf_counter()

    # -- recovery: every page that was closed comes back, as its script would bring it ----
    async def again(tab: Tab, shopper: Visitor, node: DaphneServer) -> Tab:
        if tab.open:
            return tab
        await tab.abort()
        return await reopen(shopper, node, tab.page)

    one_a, one_b, two_a, four_b = await asyncio.gather(
        again(one_a, one, a), again(one_b, one, b), again(two_a, two, a), again(four_b, four, b)
    )
    views = []
    for view, node in ((view_a, a), (view_b, b)):
        if not view.open:
            await view.abort()
            view = await reopen_staff(staff, node)
        views.append(view)
    five = await new_shopper(a)
    five_a = await reopen(five, a, "/y/")
    await one_b.request({"type": "add_item", "item_id": second})
    await one_a.until_items(one_b.items, SETTLE_SECONDS)
    after = [one_a, one_b, two_a, four_b, five_a]

    # The checkout took two's cart while Redis was down; its page shows it empty now.
    assert two_a.items == {}, two_a.items
    truth = truth_of(after)
    assert truth["shoppers"] == 4 and truth["pages"] == 5, truth
    assert truth["items"] == {str(first): 1, str(second): 1}, truth
    exact = await asyncio.gather(
        *(until_exact(view, after, RECOVERY_SECONDS, "the shoppers after the outage")
          for view in views)
    )  # fmt: skip
    print(f"both staff views exact {max(exact) - back:.2f} s after Redis came back")
    for view in views:
        await view.until(
            lambda v: replica_names(v) == {"a": "up", "b": "up"}, SETTLE_SECONDS, "both up"
        )
    for node in (a, b):
        assert "reconnected to redis://" in node.logs(500), node.logs()
    # No ghost of a page that was open before the outage comes back, nothing leaves.
    await stays_exact(views, after, 2 * DOWN_PERIOD)
    # Each node counts the sockets it really holds: every consumer that died in the outage
    # has let go of its gauge (and its staff feed). A reconnect attempt the client gave up
    # on may still be counted for a while: its consumer waits in connect() on a channel-
    # layer connection that died with Redis, until the layer's socket timeout (15 s).
    expected = {a: (3, 1), b: (2, 1)}
    counted: dict = {}
    for _ in range(int(GAUGE_SETTLE_SECONDS / 0.5)):
        for node in (a, b):
            scrape = Scrape(await asyncio.to_thread(node_metrics, node))
            counted[node] = (
                scrape.value("shop_open_shopper_sockets"),
                scrape.value("dashboard_open_staff_sockets"),
            )
        if counted == expected:
            break
        await asyncio.sleep(0.5)
    assert counted == expected, {n.port: c for n, c in counted.items()}


def node_metrics(node: DaphneServer) -> str:
    with urllib.request.urlopen(f"{node.url}/metrics", timeout=10) as response:
        return response.read().decode()
