"""Two real daphne nodes sharing one Redis and one database: a staff socket on node B sees
shoppers on both nodes converge to the truth, and gets every diff exactly once.

Each node aggregates its own tracker replica's view and sends diffs only to the staff
sockets connected to it (docs/protocol.md), so the staff client on B must see one diff per change
wherever the change happened, never a second copy relayed from A; A's own staff socket is
independent of B's and sees the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daphne_server import (
    DaphneServer,
    Database,
    create_staff_user,
    server_env,
)
from tests.live_clients import StaffClient, Tab, Visitor, seen, truth_of
from tests.redis_server import RedisServer

pytestmark = pytest.mark.cluster

STAFF_USER, STAFF_PASSWORD = "boss", "cluster-staff-pw"
# Longest wait for one change to reach a staff view on the other node: a broadcast period
# (0.2 s) plus a diff interval (0.1 s) in the worst case; generous for a loaded machine.
CONVERGE_SECONDS = 5.0
# After the last change: long enough for any late second copy of a diff to show up.
QUIET_SECONDS = 1.0


@pytest.fixture
def cluster(
    redis_server: RedisServer, tmp_path: Path, server_database: Database
) -> Iterator[tuple[DaphneServer, ...]]:
    """Nodes a and b: one database (SQLite, then PostgreSQL), one Redis, the embedded
    defaults otherwise."""
    create_staff_user(server_env(tmp_path, server_database), STAFF_USER, STAFF_PASSWORD)
    nodes = [
        DaphneServer(
            server_database,
            redis_url=redis_server.url,
            env={"TRACKER_NODE_NAME": name},
            var_dir=tmp_path / name,
        )
        for name in ("a", "b")
    ]
    try:
        for node in nodes:
            node.start()
        yield tuple(nodes)
    finally:
        for node in nodes:
            node.stop()
            print(f"--- node log {node.log_path}:\n{node.logs(60)}")  # shown if the test fails


class Truth:
    """What the aggregates must be: the open tabs (`change` waits until every tab of a cart
    shows the same contents)."""

    def __init__(self) -> None:
        self.tabs: list[Tab] = []

    def stats(self) -> dict:
        return truth_of(self.tabs)


async def test_staff_on_node_b_see_shoppers_on_both_nodes_with_each_diff_once(cluster):
    a, b = cluster
    staff = Visitor(b.url)
    await asyncio.to_thread(staff.login, STAFF_USER, STAFF_PASSWORD)
    view_b = await staff.open_dashboard(b)
    view_a = await staff.open_dashboard(a)  # independent of B's; also starts A's tracker
    views = (view_a, view_b)
    assert [view.stats["shoppers"] for view in views] == [0, 0]

    # Both replicas see each other up (the cluster panel), before any shopper comes.
    def both_up(view: StaffClient) -> bool:
        names = sorted(replica.rsplit(":", 1)[0] for replica in view.replicas)
        return names == ["a", "b"] and set(view.replicas.values()) == {"up"}

    await asyncio.gather(*(v.until(both_up, 10, "both replicas up") for v in views))
    assert view_a.node != view_b.node

    truth = Truth()
    changes = 0

    async def settle(description: str) -> None:
        """Every view reaches the truth with exactly one diff since the last change."""
        nonlocal changes
        changes += 1
        expected = truth.stats()
        await asyncio.gather(
            *(
                view.until(lambda v: seen(v) == expected, CONVERGE_SECONDS, description)
                for view in views
            )
        )
        for view in views:
            assert len(view.diffs) == changes, (
                f"after {description!r}, the staff view on {view.node} got "
                f"{len(view.diffs)} diffs for {changes} changes: "
                f"{[d.stats for d in view.diffs[-3:]]}"
            )
            assert view.diffs[-1].changed

    async def open_tab(shopper: Visitor, node: DaphneServer, page: str) -> Tab:
        tab = await shopper.open_tab(node, page)
        truth.tabs.append(tab)
        await settle(f"open {page} on {node.port}")
        return tab

    async def change(tab: Tab, kind: str, item_id: int) -> None:
        await tab.request({"type": kind, "item_id": item_id})
        # The other tabs of the cart (some on the other node) hear of it through the
        # channel layer; the truth is their common state.
        others = [t for t in truth.tabs if t.cart_id == tab.cart_id and t is not tab]
        for other in others:
            await other.until_items(tab.items, CONVERGE_SECONDS)
        await settle(f"{kind} {item_id} in cart {tab.cart_id[:8]}")

    async def close(tab: Tab) -> None:
        await tab.close()
        truth.tabs.remove(tab)
        await settle(f"close {tab.page} of cart {tab.cart_id[:8]}")

    shoppers = [Visitor(a.url), Visitor(a.url), Visitor(b.url)]
    for shopper in shoppers:
        await asyncio.to_thread(shopper.get, "/")  # the first page view names the cart
    first, second = (await asyncio.to_thread(shoppers[0].item_ids, "high"))[:2]

    # Two shoppers on A (one with two tabs), a third on B, and the first also on B.
    # Pages of the site's own routes: the staff view counts every other path as "other".
    one_x = await open_tab(shoppers[0], a, "/")
    one_y = await open_tab(shoppers[0], a, "/checkout/")
    two = await open_tab(shoppers[1], a, "/")
    three = await open_tab(shoppers[2], b, "/products/city-sneaker-white/")
    one_on_b = await open_tab(shoppers[0], b, "/checkout/")
    assert len({one_x.cart_id, two.cart_id, three.cart_id}) == 3
    assert one_on_b.cart_id == one_x.cart_id
    assert seen(view_b)["shoppers"] == 3 and seen(view_b)["pages"] == 5

    await change(one_x, "add_item", first)
    await change(one_x, "add_item", first)
    await change(two, "add_item", second)
    await change(three, "add_item", first)
    await change(one_on_b, "add_item", second)  # made on B, shown in A's tabs too
    assert view_b.stats["items"] == {str(first): 3, str(second): 2}
    assert view_b.stats["carts"][one_x.cart_id]["items"] == 3  # three tabs, counted once

    # A staff socket opened now on B gets the same numbers in its snapshot.
    late = await staff.open_dashboard(b)
    assert seen(late) == truth.stats()
    await late.close()

    await change(two, "remove_item", second)
    await close(one_y)
    await close(three)
    await close(one_x)
    assert view_b.stats["items"] == {str(first): 2, str(second): 1}  # one_on_b keeps the cart
    await close(one_on_b)
    await close(two)
    assert (
        seen(view_b)
        == seen(view_a)
        == {"shoppers": 0, "pages": 0, "items": {}, "pages_by_path": {}, "carts": {}}
    )

    # No late copies of any diff.
    await asyncio.gather(*(view.drain(QUIET_SECONDS) for view in views))
    for view in views:
        assert len(view.diffs) == changes == 16
        assert all(diff.changed for diff in view.diffs)
        await view.close()
