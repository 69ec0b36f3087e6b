"""Shopper sockets belong to the login state they were opened under (shop.login_state): login,
logout and re-linking a cart close the sockets opened before, and a socket whose login
state ended can change nothing even if that news never reached it. One node here (the
in-memory channel layer); tests/cluster/test_login_state.py runs the attack on two."""

import json

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.test import Client

from shop.broadcast import cart_group
from shop.carts import CART_SESSION_KEY
from shop.consumers import NO_CART_CLOSE_CODE
from shop.identity import cart_cookie_value
from shop.login_state import (
    ANONYMOUS_LOGIN_CHANGED_EVENT,
    LOGIN_CHANGED_CLOSE_CODE,
    LOGIN_CHANGED_EVENT,
    session_group,
)
from shop.models import Cart, CartItem
from tests.shop.conftest import cart_cookie, cart_state, communicator, session_with_cart

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "pw-victim-123"
CLOSED = {"type": "websocket.close", "code": LOGIN_CHANGED_CLOSE_CODE}


@pytest.fixture
def victim(db):
    return get_user_model().objects.create_user("victim", password=PASSWORD)


async def opened(comm) -> dict:
    """Connect; return the first message (the cart)."""
    connected, _ = await comm.connect()
    assert connected
    return json.loads(await comm.receive_from())


async def browser(cookies: dict[str, str]) -> Client:
    client = await database_sync_to_async(Client)()
    for name, value in cookies.items():
        client.cookies[name] = value
    return client


async def log_in(client: Client) -> None:
    response = await database_sync_to_async(client.post)(
        "/accounts/login/", {"username": "victim", "password": PASSWORD}
    )
    assert response.status_code == 302


async def add(comm, item_id: int) -> None:
    await comm.send_to(text_data=json.dumps({"type": "add_item", "item_id": item_id}))


@pytest.mark.parametrize("planted", ["cart_cookie", "session_cookie"])
async def test_a_planted_cookie_loses_its_socket_when_the_victim_logs_in(
    catalogue, cart, victim, planted
):
    """The attacker's cookie (a cart cookie, or a session from before the cart cookie) is
    planted in the victim's browser; the victim shops and logs in. The attacker's socket is
    closed, and neither it nor a new one can touch the victim's cart."""
    if planted == "cart_cookie":
        cookies = {settings.CART_COOKIE_NAME: cart_cookie_value(str(cart.id))}
    else:
        key = await database_sync_to_async(session_with_cart)(cart)
        cookies = {settings.SESSION_COOKIE_NAME: key}
    header = "; ".join(f"{name}={value}" for name, value in cookies.items())
    attacker = communicator(cookie=header)
    await opened(attacker)
    victims_tab = communicator(cookie=header, page="/checkout/")
    await opened(victims_tab)

    await log_in(await browser(cookies))
    assert await attacker.receive_output(timeout=3) == CLOSED
    assert await victims_tab.receive_output(timeout=3) == CLOSED  # the page reloads
    await database_sync_to_async(cart.refresh_from_db)()
    assert cart.user_id == victim.pk

    # A new socket with the planted cookie opens nothing: the cart cookie's cart is the
    # victim's now, the planted session is gone.
    again = communicator(cookie=header)
    assert (await again.connect())[0]
    outputs = [await again.receive_output(timeout=3)]
    while outputs[-1]["type"] != "websocket.close":
        outputs.append(await again.receive_output(timeout=3))
    assert outputs[-1]["code"] in {LOGIN_CHANGED_CLOSE_CODE, NO_CART_CLOSE_CODE}
    assert all('"cart"' not in output.get("text", "") for output in outputs)
    assert await database_sync_to_async(cart_state)(cart) == (0, [])


async def test_logout_closes_the_sessions_sockets_and_only_those(catalogue, victim):
    laptop, phone = await browser({}), await browser({})
    await log_in(laptop)
    await log_in(phone)
    laptop_key = laptop.cookies[settings.SESSION_COOKIE_NAME].value
    phone_key = phone.cookies[settings.SESSION_COOKIE_NAME].value
    on_laptop, on_phone = communicator(laptop_key), communicator(phone_key)
    await opened(on_laptop)
    await opened(on_phone)

    await database_sync_to_async(laptop.post)("/accounts/logout/")
    assert await on_laptop.receive_output(timeout=3) == CLOSED
    assert await on_phone.receive_nothing(0.3)  # another session of the user: still open
    await add(on_phone, catalogue["plenty"].pk)
    assert json.loads(await on_phone.receive_from())["type"] == "cart"

    stale = communicator(laptop_key)  # the old session cookie names nothing any more
    assert (await stale.connect())[0]
    assert json.loads(await stale.receive_from())["code"] == "no_cart"
    assert (await stale.receive_output()) == {"type": "websocket.close", "code": NO_CART_CLOSE_CODE}
    await on_phone.disconnect()


async def test_a_socket_whose_session_ended_unheard_changes_nothing(catalogue, victim):
    """The close message may be lost (the channel layer delivers at most once): the socket
    checks its session before every change."""
    client = await browser({})
    await log_in(client)
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    tab = communicator(key)
    cart_id = (await opened(tab))["cart"]["id"]
    await database_sync_to_async(Session.objects.filter(session_key=key).delete)()
    await add(tab, catalogue["plenty"].pk)
    assert await tab.receive_output(timeout=3) == CLOSED
    assert not await database_sync_to_async(Cart.objects.filter(pk=cart_id).exists)()


async def test_an_anonymous_socket_whose_cart_was_taken_unheard_changes_nothing(
    catalogue, cart, victim
):
    tab = communicator(cookie=cart_cookie(cart))
    await opened(tab)
    await database_sync_to_async(Cart.objects.filter(pk=cart.pk).update)(user=victim)
    await add(tab, catalogue["plenty"].pk)
    assert await tab.receive_output(timeout=3) == CLOSED
    assert await database_sync_to_async(cart_state)(cart) == (0, [])


async def test_login_that_reopens_the_users_cart_closes_the_anonymous_tabs(catalogue, victim):
    """Re-linking: a browser without a cart of its own logs in and gets the user's latest
    cart; its anonymous tabs (of an empty cart never written) close and come back with it."""
    users_cart = await database_sync_to_async(Cart.objects.create)(user=victim)
    await database_sync_to_async(CartItem.objects.create)(
        cart=users_cart, item=catalogue["plenty"], quantity=2
    )
    client = await browser({})
    await database_sync_to_async(client.get)("/")
    anonymous_id = (await opened(tab := communicator(cookie=cookie_header(client))))["cart"]["id"]
    assert anonymous_id != str(users_cart.id)
    await log_in(client)
    assert await tab.receive_output(timeout=3) == CLOSED
    session = await database_sync_to_async(lambda: client.session[CART_SESSION_KEY])()
    assert session == str(users_cart.id)
    back = communicator(cookie=cookie_header(client))
    assert (await opened(back))["cart"]["id"] == str(users_cart.id)
    await back.disconnect()


def cookie_header(client: Client) -> str:
    return "; ".join(f"{name}={morsel.value}" for name, morsel in client.cookies.items())


async def test_an_anonymous_socket_joins_one_channel_layer_group(cart):
    """Its login state's group is its cart's: one group_add per connect, not two."""
    comm = communicator(cookie=cart_cookie(cart))
    await opened(comm)
    layer = get_channel_layer()
    joined = [group for group, members in layer.groups.items() if members]
    assert joined == [cart_group(str(cart.id))]
    await comm.disconnect()


async def test_the_end_of_an_anonymous_login_state_spares_a_logged_in_tab_of_the_cart(
    catalogue, victim
):
    """An anonymous cart's login state ends in its cart's group; a logged-in tab of that
    cart (a cart its user took over) hears it too, and stays open: only its session's end
    closes it."""
    client = await browser({})
    await log_in(client)
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    tab = communicator(key)
    first = await opened(tab)
    layer = get_channel_layer()
    await layer.group_send(cart_group(first["cart"]["id"]), ANONYMOUS_LOGIN_CHANGED_EVENT)
    assert await tab.receive_nothing(timeout=0.3)
    await layer.group_send(session_group(key), LOGIN_CHANGED_EVENT)
    assert await tab.receive_output(timeout=3) == CLOSED
