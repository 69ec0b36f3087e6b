"""Shoppers on a product page see how many carts view it and how many hold each size
(docs/protocol.md, product_presence): the numbers move exactly as shoppers come, add,
remove and leave, through the process's tracker and the node's product feed."""

from __future__ import annotations

from typing import Any

import pytest

from shop.models import Cart

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = "/products/test-boot/"


@pytest.fixture(autouse=True)
def quick_updates(settings):
    settings.PRODUCT_PRESENCE_INTERVAL = 0.05


async def presence(tab) -> dict[str, Any]:  # noqa: ANN001 - tests.shop.conftest.Tab
    """The next product_presence message of the tab (other messages skipped)."""
    while True:
        message = await tab.receive()
        if message["type"] == "product_presence":
            return {k: v for k, v in message.items() if k != "type"}


async def test_numbers_move_as_shoppers_come_add_remove_and_leave(
    catalogue, cart, open_tab, site_tracker
):
    plenty, other = catalogue["plenty"], catalogue["other"]
    me = await open_tab(cart, page=PAGE)
    assert await presence(me) == {"product": "test-boot", "viewers": 1, "in_carts": {}}

    theirs = await Cart.objects.acreate()
    them = await open_tab(theirs, page=PAGE)
    assert await presence(them) == {"product": "test-boot", "viewers": 2, "in_carts": {}}
    assert await presence(me) == {"product": "test-boot", "viewers": 2, "in_carts": {}}
    assert await them.nothing_more()  # its first numbers once, not again at the next flush

    await them.request({"type": "add_item", "item_id": plenty.pk})
    await them.request({"type": "add_item", "item_id": plenty.pk})  # one cart, counted once
    in_one = {"product": "test-boot", "viewers": 2, "in_carts": {str(plenty.pk): 1}}
    assert await presence(me) == in_one
    await me.request({"type": "add_item", "item_id": plenty.pk})
    await me.request({"type": "add_item", "item_id": other.pk})
    both = {str(plenty.pk): 2, str(other.pk): 1}
    while (numbers := await presence(me))["in_carts"] != both:  # (maybe one step at a time)
        assert numbers["viewers"] == 2

    # Their second tab on the page, and a third shopper elsewhere: nothing moves.
    second = await open_tab(theirs, page=PAGE)
    assert (await presence(second))["viewers"] == 2
    elsewhere = await open_tab(await Cart.objects.acreate(), page="/")
    assert await me.nothing_more()
    assert await elsewhere.nothing_more()  # (no numbers for a page that is not a product's)

    await them.request({"type": "remove_item", "item_id": plenty.pk})  # still one left
    await them.request({"type": "remove_item", "item_id": plenty.pk})
    assert await presence(me) == {"product": "test-boot", "viewers": 2, "in_carts": {
        str(plenty.pk): 1, str(other.pk): 1}}  # fmt: skip

    await them.communicator.disconnect()
    await second.communicator.disconnect()
    assert await presence(me) == {"product": "test-boot", "viewers": 1, "in_carts": {
        str(plenty.pk): 1, str(other.pk): 1}}  # fmt: skip


async def test_a_reconnecting_page_gets_the_numbers_again(catalogue, cart, open_tab, site_tracker):
    first = await open_tab(cart, page=PAGE)
    assert (await presence(first))["viewers"] == 1
    await first.communicator.disconnect()
    again = await open_tab(cart, page=PAGE)
    assert await presence(again) == {"product": "test-boot", "viewers": 1, "in_carts": {}}
