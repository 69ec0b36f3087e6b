"""Sockets per shopper and per client address are bounded (shop.socket_limits): one over
a limit is refused at the handshake with `too_many_sockets` and close code 4029."""

import json

import pytest
from channels.db import database_sync_to_async
from django.conf import settings

from shop.models import Cart
from shop.socket_limits import COUNTS, TOO_MANY_SOCKETS_CLOSE_CODE
from tests.shop.conftest import cart_cookie, communicator, session_with_cart

pytestmark = pytest.mark.django_db(transaction=True)


async def opens(comm) -> bool:
    """Whether the socket opens with its cart; if refused, it was refused as too many."""
    assert (await comm.connect())[0]
    first = json.loads(await comm.receive_from())
    if first["type"] == "cart":
        return True
    assert first["type"] == "error" and first["code"] == "too_many_sockets"
    assert "Close some" in first["message"]
    closed = await comm.receive_output()
    assert closed == {"type": "websocket.close", "code": TOO_MANY_SOCKETS_CLOSE_CODE}
    return False


async def test_one_shopper_holds_at_most_the_default_number_of_sockets(cart):
    """200 sockets of one session were all accepted."""
    limit = settings.SHOPPER_SOCKETS_PER_SESSION
    assert 0 < limit <= 50
    tabs = [communicator(cookie=cart_cookie(cart)) for _ in range(limit)]
    for tab in tabs:
        assert await opens(tab)
    assert not await opens(communicator(cookie=cart_cookie(cart)))
    # Another shopper is not affected, and a closed tab frees its place.
    other = communicator(cookie=cart_cookie(await database_sync_to_async(Cart.objects.create)()))
    assert await opens(other)
    await tabs[0].disconnect()
    again = communicator(cookie=cart_cookie(cart))
    assert await opens(again)
    for tab in [*tabs[1:], other, again]:
        await tab.disconnect()
    assert not COUNTS.open  # every socket gave its places back


async def test_an_anonymous_carts_sockets_count_together_however_they_name_it(cart, settings):
    """By the cart cookie or by a session from before it: one anonymous shopper."""
    settings.SHOPPER_SOCKETS_PER_SESSION = 2
    key = await database_sync_to_async(session_with_cart)(cart)
    tabs = [communicator(cookie=cart_cookie(cart)) for _ in range(2)]
    for tab in tabs:
        assert await opens(tab)
    assert not await opens(communicator(cookie=cart_cookie(cart)))
    assert not await opens(communicator(key))
    for tab in tabs:
        await tab.disconnect()


async def test_one_client_address_holds_at_most_its_limit(settings):
    settings.SHOPPER_SOCKETS_PER_ADDRESS = 3
    carts = [await database_sync_to_async(Cart.objects.create)() for _ in range(5)]
    here = ("203.0.113.7", 50000)
    tabs = [communicator(cookie=cart_cookie(c), client=here) for c in carts[:3]]
    for tab in tabs:
        assert await opens(tab)
    assert not await opens(communicator(cookie=cart_cookie(carts[3]), client=here))
    elsewhere = communicator(cookie=cart_cookie(carts[4]), client=("198.51.100.9", 50000))
    assert await opens(elsewhere)
    for tab in [*tabs, elsewhere]:
        await tab.disconnect()


async def test_zero_lifts_a_limit(cart, settings):
    settings.SHOPPER_SOCKETS_PER_SESSION = 0
    tabs = [communicator(cookie=cart_cookie(cart)) for _ in range(40)]
    for tab in tabs:
        assert await opens(tab)
    for tab in tabs:
        await tab.disconnect()
