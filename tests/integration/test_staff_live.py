"""Shoppers move the staff numbers exactly: the real tracker, the real hub, real sockets."""

import asyncio
import json
import uuid

import pytest
from channels.db import database_sync_to_async

from shop.models import Cart
from tests.dashboard.conftest import staff_socket_of
from tests.dashboard.support import apply_stats_diff

pytestmark = pytest.mark.django_db(transaction=True)


class StaffView:
    """A staff client: the snapshot, with every diff applied in order, as dashboard.js does."""

    def __init__(self, communicator) -> None:
        self.communicator = communicator
        self.stats: dict = {}
        self.diffs = 0

    async def open(self) -> "StaffView":
        connected, _ = await self.communicator.connect()
        assert connected
        snapshot = json.loads(await self.communicator.receive_from(timeout=3))
        assert snapshot["type"] == "snapshot"
        self.stats = snapshot["stats"]
        return self

    async def until(self, **expected) -> None:
        """Apply diffs until the stats named hold the values given (3 s at most)."""
        async with asyncio.timeout(3):
            while {k: self.stats.get(k) for k in expected} != expected:
                message = json.loads(await self.communicator.receive_from(timeout=3))
                if message["type"] == "diff":
                    apply_stats_diff(self.stats, message["stats"])
                    self.diffs += 1


@pytest.fixture
async def staff_view(staff, site_tracker):
    view = await StaffView(await staff_socket_of(staff)).open()
    yield view
    await view.communicator.disconnect()


async def test_a_shopper_moves_the_staff_numbers_exactly(catalogue, cart, open_tab, staff_view):
    assert (staff_view.stats["shoppers"], staff_view.stats["pages"]) == (0, 0)
    tab = await open_tab(cart, page="/products/test-boot/")
    await staff_view.until(shoppers=1, pages=1, pages_by_path={"/products/test-boot/": 1})

    plenty, other = catalogue["plenty"], catalogue["other"]
    await tab.request({"type": "add_item", "item_id": plenty.pk})
    await tab.request({"type": "add_item", "item_id": plenty.pk})
    await tab.request({"type": "add_item", "item_id": other.pk})
    await staff_view.until(items={str(plenty.pk): 2, str(other.pk): 1})
    assert staff_view.stats["carts"][str(cart.id)]["items"] == 3

    await tab.request({"type": "remove_item", "item_id": other.pk})
    await staff_view.until(items={str(plenty.pk): 2})

    await tab.communicator.disconnect()
    await staff_view.until(shoppers=0, pages=0, items={}, pages_by_path={}, carts={})


async def test_three_tabs_of_one_cart_count_once(catalogue, cart, open_tab, staff_view):
    tabs = [await open_tab(cart, page=f"/p{i}/") for i in range(3)]
    item = catalogue["plenty"]
    await tabs[0].request({"type": "add_item", "item_id": item.pk})
    await staff_view.until(shoppers=1, pages=3, items={str(item.pk): 1})
    assert staff_view.stats["carts"][str(cart.id)]["pages"] == 3

    await tabs[2].request({"type": "add_item", "item_id": item.pk})
    await staff_view.until(shoppers=1, pages=3, items={str(item.pk): 2})

    await tabs[0].communicator.disconnect()
    await tabs[1].communicator.disconnect()
    await staff_view.until(shoppers=1, pages=1, items={str(item.pk): 2})
    await tabs[2].communicator.disconnect()
    await staff_view.until(shoppers=0, pages=0, items={})


async def test_a_late_staff_socket_gets_the_current_numbers_in_its_snapshot(
    catalogue, cart, open_tab, staff, site_tracker
):
    tab = await open_tab(cart)
    await tab.request({"type": "add_item", "item_id": catalogue["two_left"].pk})
    view = await StaffView(await staff_socket_of(staff)).open()
    assert view.stats["shoppers"] == 1 and view.stats["pages"] == 1
    assert view.stats["items"] == {str(catalogue["two_left"].pk): 1}
    await view.communicator.disconnect()


async def test_pages_by_path_is_bounded_by_the_sites_routes(catalogue, cart, open_tab, staff_view):
    """Every made-up path lands in one bucket; a product's page counts only if it is for
    sale: the table's size is bounded by the catalogue, not by what clients send."""
    made_up = [f"/p{i}/" for i in range(5)] + ["/products/secret-boot/", "/<b>hi</b>/"]
    for page in made_up + ["/", "/products/test-boot/", "/checkout/"]:
        await open_tab(cart, page=page)
    await staff_view.until(
        pages=10,
        pages_by_path={"other": 7, "/": 1, "/products/test-boot/": 1, "/checkout/": 1},
    )


async def test_an_online_cart_without_a_row_is_a_shopper(catalogue, open_tab, staff_view):
    """A page view names a cart without writing it: online, it counts as a shopper."""
    cart_id = str(uuid.uuid4())
    await open_tab(cart_id, page="/")
    await staff_view.until(shoppers=1, pages=1, items={})
    assert staff_view.stats["carts"][cart_id]["items"] == 0
    assert not await database_sync_to_async(Cart.objects.filter(pk=cart_id).exists)()
