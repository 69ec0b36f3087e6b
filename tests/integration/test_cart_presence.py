"""Every shopper page is tracked on topic `carts` with the meta of docs/protocol.md, follows its
cart's changes in any tab, and leaves when the page closes."""

import asyncio
import time

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.contrib.sessions.backends.db import SessionStore

from shop import carts, open_tabs
from shop.broadcast import cart_group
from shop.carts import CART_SESSION_KEY
from shop.models import Cart
from tests.shop.conftest import communicator

pytestmark = pytest.mark.django_db(transaction=True)


async def test_an_open_page_is_tracked_with_its_cart_meta(catalogue, cart, open_tab, site_tracker):
    before = time.time()
    await open_tab(cart, page="/products/test-boot/")
    [(key, meta)] = site_tracker.list("carts")
    assert key == str(cart.id)
    assert meta["cart_id"] == str(cart.id)
    assert meta["page"] == "/products/test-boot/"
    assert meta["items"] == {}
    assert meta["user"] is None
    assert before <= meta["joined_at"] <= time.time()
    assert meta["rev"] == cart.revision


async def test_meta_follows_the_cart_in_every_tab_and_leaves_on_close(
    catalogue, cart, open_tab, site_tracker
):
    first = await open_tab(cart, page="/")
    second = await open_tab(cart, page="/checkout/")
    item = catalogue["plenty"]
    await first.request({"type": "add_item", "item_id": item.pk})
    await first.request({"type": "add_item", "item_id": item.pk})
    await second.receive()  # the change reaches the other tab ...
    await second.receive()
    rows = site_tracker.get_by_key("carts", str(cart.id))
    assert len(rows) == 2  # ... and both tabs' metas now carry it
    assert sorted(meta["page"] for _, meta in rows) == ["/", "/checkout/"]
    revision = (await database_sync_to_async(Cart.objects.get)(pk=cart.pk)).revision
    for _, meta in rows:
        assert meta["items"] == {item.pk: 2}
        assert meta["rev"] == revision
    joined = {meta["page"]: meta["joined_at"] for _, meta in rows}

    await second.request({"type": "remove_item", "item_id": item.pk})
    await first.receive()
    rows = site_tracker.get_by_key("carts", str(cart.id))
    assert [meta["items"] for _, meta in rows] == [{item.pk: 1}, {item.pk: 1}]
    assert {meta["page"]: meta["joined_at"] for _, meta in rows} == joined  # updates keep it

    await first.communicator.disconnect()
    assert [meta["page"] for _, meta in site_tracker.get_by_key("carts", str(cart.id))] == [
        "/checkout/"
    ]
    await second.communicator.disconnect()
    assert site_tracker.list("carts") == []


def logged_in_session_with(cart, user) -> str:
    session = SessionStore()
    session[CART_SESSION_KEY] = str(cart.id)
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.save()
    return session.session_key


async def test_a_logged_in_shoppers_page_names_the_user(site_tracker, django_user_model):
    user = await database_sync_to_async(django_user_model.objects.create_user)("ada", password="x")
    cart = await database_sync_to_async(Cart.objects.create)(user=user)
    key = await database_sync_to_async(logged_in_session_with)(cart, user)
    tab = communicator(key)
    connected, _ = await tab.connect()
    assert connected
    await tab.receive_from()
    [(_, meta)] = site_tracker.list("carts")
    assert meta["user"] == "ada"
    await tab.disconnect()
    assert site_tracker.list("carts") == []


async def test_a_tab_whose_cart_message_was_lost_catches_up_through_the_tracker(
    catalogue, cart, open_tab, site_tracker, monkeypatch
):
    """The channel layer delivers at most once; the revision in the other tab's tracker meta
    brings a tab that missed a change up to date after the grace period."""
    monkeypatch.setattr(open_tabs, "GRACE_SECONDS", 0.2)
    first = await open_tab(cart, page="/")
    second = await open_tab(cart, page="/checkout/")
    # Lose every channel-layer message to the second tab: it leaves its cart's group.
    layer = get_channel_layer()
    [second_channel] = [
        c for c, m in site_tracker.get_by_key("carts", str(cart.id)) if m["page"] == "/checkout/"
    ]
    await layer.group_discard(cart_group(str(cart.id)), second_channel)

    item = catalogue["plenty"]
    await first.request({"type": "add_item", "item_id": item.pk})
    assert await second.communicator.receive_nothing(timeout=0.1)  # the message is lost...
    message = await second.receive()  # ... and the tracker brings the change anyway
    assert message["type"] == "cart"
    assert [(line["item_id"], line["quantity"]) for line in message["cart"]["items"]] == [
        (item.pk, 1)
    ]
    rows = site_tracker.get_by_key("carts", str(cart.id))
    assert [meta["items"] for _, meta in rows] == [{item.pk: 1}, {item.pk: 1}]


async def test_tabs_that_got_the_change_do_not_reload(
    catalogue, cart, open_tab, site_tracker, monkeypatch
):
    monkeypatch.setattr(open_tabs, "GRACE_SECONDS", 0.1)
    reloads = []
    original = carts.load_snapshot
    first = await open_tab(cart)
    second = await open_tab(cart)
    monkeypatch.setattr(
        carts, "load_snapshot", lambda cart_id: reloads.append(cart_id) or original(cart_id)
    )
    await first.request({"type": "add_item", "item_id": catalogue["plenty"].pk})
    assert (await second.receive())["type"] == "cart"
    await asyncio.sleep(0.3)
    assert reloads == []
