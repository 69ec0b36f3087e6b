"""The shopper socket contract of docs/protocol.md, through shop.asgi.application."""

import asyncio
import json
import threading
import uuid

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.core import signing
from django.db import OperationalError, connection
from django.test import Client

from shop.broadcast import publish_cart
from shop.consumers import (
    MAX_FRAME_BYTES,
    NO_CART_CLOSE_CODE,
    RATE_LIMIT,
    ShoppingCartConsumer,
    clean_page,
)
from shop.login_state import LOGIN_CHANGED_CLOSE_CODE
from shop.models import Cart, CartItem, Item
from tests.shop.conftest import Tab, cart_cookie, cart_state, communicator, session_with_cart

# Consumers reach the database from worker threads, which only see committed data. Every
# test runs on SQLite and on PostgreSQL.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("django_database")]

# Bounded waits for another thread; never reached when the code is right.
WAIT_SECONDS = 10

LINE_KEYS = {"item_id", "product", "size", "quantity", "price", "available"}


def assert_cart_message(message, cart, items):
    """`items` is [(item_id, quantity)]; checks the exact shape of the cart message."""
    assert message["type"] == "cart"
    assert set(message) == {"type", "cart"}
    body = message["cart"]
    assert set(body) == {"id", "items", "total_quantity"}
    assert body["id"] == str(cart.id)
    for line in body["items"]:
        assert set(line) == LINE_KEYS
        assert type(line["item_id"]) is int and type(line["quantity"]) is int
        assert isinstance(line["price"], str) and isinstance(line["available"], bool)
    assert [(line["item_id"], line["quantity"]) for line in body["items"]] == items
    assert body["total_quantity"] == sum(quantity for _, quantity in items)


async def state(cart):
    return await database_sync_to_async(cart_state)(cart)


async def test_connect_sends_the_cart(catalogue, cart, open_tab):
    await database_sync_to_async(CartItem.objects.create)(
        cart=cart, item=catalogue["plenty"], quantity=2
    )
    tab = await open_tab(cart)
    assert_cart_message(tab.first, cart, [(catalogue["plenty"].pk, 2)])
    line = tab.first["cart"]["items"][0]
    assert line == {
        "item_id": catalogue["plenty"].pk,
        "product": "Test Boot",
        "size": "42",
        "quantity": 2,
        "price": "120.00",
        "available": True,
    }
    assert await tab.nothing_more()


async def test_add_item_sends_cart_then_ok_and_stores_it(catalogue, cart, open_tab):
    tab = await open_tab(cart)
    item = catalogue["plenty"]
    cart_msg, ok = await tab.request({"type": "add_item", "item_id": item.pk, "request_id": "a1"})
    assert_cart_message(cart_msg, cart, [(item.pk, 1)])
    assert ok == {"type": "ok", "request_id": "a1"}
    cart_msg, ok = await tab.request({"type": "add_item", "item_id": item.pk, "request_id": 7})
    assert_cart_message(cart_msg, cart, [(item.pk, 2)])
    assert ok == {"type": "ok", "request_id": 7}
    assert await state(cart) == (2, [(item.pk, 2)])


@pytest.mark.parametrize("request_id", [None, 0, -7, 2**53, -(2**53), "", "x", "é" * 64, "a1-b2"])
async def test_a_valid_request_id_is_echoed(catalogue, cart, open_tab, request_id):
    tab = await open_tab(cart)
    replies = await tab.request(
        {"type": "add_item", "item_id": catalogue["plenty"].pk, "request_id": request_id}
    )
    assert replies[-1] == {"type": "ok", "request_id": request_id}
    replies = await tab.request(
        {"type": "add_item", "item_id": catalogue["sold_out"].pk, "request_id": request_id}
    )
    assert replies[-1]["request_id"] == request_id


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    "request_id",
    [
        '[1, "two"]',
        '{"nested": {"a": [true]}}',
        "true",
        "false",
        "1.5",
        "1.0",
        "1e3",
        str(2**53 + 1),
        str(-(2**53) - 1),
        json.dumps("x" * 65),
        json.dumps("é" * 65),
        nested(500),
        nested(970),  # may parse, but its reply could not be encoded (RecursionError, 1011)
    ],
)
async def test_any_other_request_id_is_invalid_and_changes_nothing(
    catalogue, cart, open_tab, request_id
):
    """A request_id is null, an integer within +-2^53 or a string of at most 64 characters."""
    other = await open_tab(cart, page="/checkout/")
    tab = await open_tab(cart)
    item_id = catalogue["plenty"].pk
    text = f'{{"type": "add_item", "item_id": {item_id}, "request_id": {request_id}}}'
    await tab.send_text(text)
    error = await tab.receive()
    assert error["type"] == "error" and error["code"] == "invalid_message"
    assert "request_id" not in error  # it cannot be echoed
    if not request_id.startswith("[["):  # (deeper ones may not even parse here)
        assert "request_id" in error["message"]
    assert await tab.nothing_more() and await other.nothing_more()
    assert await state(cart) == (0, [])
    replies = await tab.request({"type": "add_item", "item_id": catalogue["plenty"].pk})
    assert replies[-1] == {"type": "ok", "request_id": None}


async def test_a_reply_that_cannot_be_sent_still_reaches_the_other_tabs(
    catalogue, cart, open_tab, monkeypatch
):
    """The change is stored; however sending to this tab fails (here its first send, the
    new cart), every other tab of the cart hears of it: nothing is left half-published."""
    other = await open_tab(cart, page="/")
    comm = communicator(await database_sync_to_async(session_with_cart)(cart), page="/checkout/")
    assert (await comm.connect())[0]
    await comm.receive_from()  # its cart
    sent = ShoppingCartConsumer.send_json

    async def failing(self, payload):
        if self.page == "/checkout/":  # the failing tab
            raise RuntimeError("the client went away")
        await sent(self, payload)

    monkeypatch.setattr(ShoppingCartConsumer, "send_json", failing)
    item = catalogue["plenty"]
    await comm.send_to(text_data=json.dumps({"type": "add_item", "item_id": item.pk}))
    with pytest.raises(RuntimeError):
        await comm.wait(3)
    assert await state(cart) == (1, [(item.pk, 1)])
    assert_cart_message(await other.receive(), cart, [(item.pk, 1)])


async def test_ok_without_request_id_carries_null(catalogue, cart, open_tab):
    tab = await open_tab(cart)
    replies = await tab.request({"type": "add_item", "item_id": catalogue["plenty"].pk})
    assert replies[-1] == {"type": "ok", "request_id": None}


async def test_remove_item_takes_one_unit_and_deletes_the_line_at_zero(catalogue, cart, open_tab):
    item, other = catalogue["plenty"], catalogue["other"]
    await database_sync_to_async(CartItem.objects.create)(cart=cart, item=item, quantity=2)
    await database_sync_to_async(CartItem.objects.create)(cart=cart, item=other, quantity=1)
    tab = await open_tab(cart)
    cart_msg, ok = await tab.request({"type": "remove_item", "item_id": item.pk, "request_id": 1})
    assert_cart_message(cart_msg, cart, [(item.pk, 1), (other.pk, 1)])
    assert ok["type"] == "ok"
    cart_msg, _ = await tab.request({"type": "remove_item", "item_id": item.pk})
    assert_cart_message(cart_msg, cart, [(other.pk, 1)])
    assert await state(cart) == (2, [(other.pk, 1)])
    [error] = await tab.request({"type": "remove_item", "item_id": item.pk, "request_id": 3})
    assert error["code"] == "not_found" and error["request_id"] == 3
    assert await state(cart) == (2, [(other.pk, 1)])


async def test_cannot_add_more_than_the_stock(catalogue, cart, open_tab):
    tab = await open_tab(cart)
    item = catalogue["two_left"]
    for _ in range(2):
        assert (await tab.request({"type": "add_item", "item_id": item.pk}))[-1]["type"] == "ok"
    [error] = await tab.request({"type": "add_item", "item_id": item.pk, "request_id": "r"})
    assert error["type"] == "error" and error["code"] == "out_of_stock"
    assert error["request_id"] == "r" and error["message"]
    assert await state(cart) == (2, [(item.pk, 2)])


@pytest.mark.parametrize(
    ("item_key", "code"),
    [("sold_out", "out_of_stock"), ("unreleased", "not_found"), (None, "not_found")],
)
async def test_refused_items(catalogue, cart, open_tab, item_key, code):
    tab = await open_tab(cart)
    item_id = catalogue[item_key].pk if item_key else 987654
    [error] = await tab.request({"type": "add_item", "item_id": item_id, "request_id": 5})
    assert error["code"] == code and error["request_id"] == 5
    assert await state(cart) == (0, [])


TOO_LARGE = json.dumps({"type": "add_item", "item_id": 1, "pad": "€" * 1400})  # > 4 KiB as UTF-8

BAD_TEXT = [
    ("not json", "invalid_message", False),
    ("[1, 2]", "invalid_message", False),
    ('"add_item"', "invalid_message", False),
    ("42", "invalid_message", False),
    ("null", "invalid_message", False),
    ('{"type": "add_item", "item_id": NaN}', "invalid_message", False),
    ("[" * 5000, "too_large", False),
    ("[" * 4000 + "]" * 90, "invalid_message", False),
    (TOO_LARGE, "too_large", False),
    ('{"item_id": 1, "request_id": "q"}', "invalid_message", True),
    ('{"type": 3, "item_id": 1, "request_id": "q"}', "invalid_message", True),
    ('{"type": "checkout", "request_id": "q"}', "unknown_type", True),
    ('{"type": "ADD_ITEM", "item_id": 1, "request_id": "q"}', "unknown_type", True),
    ('{"type": "add_item", "request_id": "q"}', "invalid_message", True),
    ('{"type": "add_item", "item_id": "1", "request_id": "q"}', "invalid_message", True),
    ('{"type": "add_item", "item_id": 1.0, "request_id": "q"}', "invalid_message", True),
    ('{"type": "add_item", "item_id": true, "request_id": "q"}', "invalid_message", True),
    ('{"type": "add_item", "item_id": null, "request_id": "q"}', "invalid_message", True),
    ('{"type": "remove_item", "item_id": [1], "request_id": "q"}', "invalid_message", True),
    ('{"type": "add_item", "item_id": -1, "request_id": "q"}', "not_found", True),
    (
        '{"type": "add_item", "item_id": 99999999999999999999999, "request_id": "q"}',
        "not_found",
        True,
    ),
    (
        '{"type": "remove_item", "item_id": 99999999999999999999999, "request_id": "q"}',
        "not_found",
        True,
    ),
]


@pytest.mark.parametrize(("text", "code", "echoes"), BAD_TEXT)
async def test_bad_input_is_refused_and_changes_nothing(
    catalogue, cart, open_tab, text, code, echoes
):
    await database_sync_to_async(CartItem.objects.create)(
        cart=cart, item=catalogue["other"], quantity=1
    )
    tab = await open_tab(cart)
    before = await state(cart)
    await tab.send_text(text)
    error = await tab.receive()
    assert error["type"] == "error" and error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert ("request_id" in error) == echoes
    if echoes:
        assert error["request_id"] == "q"
    assert await tab.nothing_more()
    assert await state(cart) == before
    # The socket is still open and serves the next valid message.
    replies = await tab.request({"type": "add_item", "item_id": catalogue["plenty"].pk})
    assert replies[-1]["type"] == "ok"


async def test_binary_frames_are_invalid(catalogue, cart, open_tab):
    tab = await open_tab(cart)
    await tab.send_bytes(
        json.dumps({"type": "add_item", "item_id": catalogue["plenty"].pk}).encode()
    )
    error = await tab.receive()
    assert error["code"] == "invalid_message"
    assert await state(cart) == (0, [])
    assert (await tab.request({"type": "add_item", "item_id": catalogue["plenty"].pk}))[-1][
        "type"
    ] == "ok"


async def test_a_frame_of_exactly_4_kib_is_accepted(catalogue, cart, open_tab):
    tab = await open_tab(cart)
    message = {"type": "add_item", "item_id": catalogue["plenty"].pk, "pad": ""}
    padding = MAX_FRAME_BYTES - len(json.dumps(message).encode())
    message["pad"] = "é" * (padding // 2) + "x" * (padding % 2)
    assert len(json.dumps(message, ensure_ascii=False).encode()) == MAX_FRAME_BYTES
    await tab.send_text(json.dumps(message, ensure_ascii=False))
    replies = [await tab.receive(), await tab.receive()]
    assert [reply["type"] for reply in replies] == ["cart", "ok"]


async def test_more_than_20_messages_a_second_are_rate_limited(catalogue, cart, open_tab):
    tab = await open_tab(cart)
    item = catalogue["plenty"]
    # Messages that need no database work, so that all of them land within one second.
    for n in range(RATE_LIMIT):
        await tab.send({"type": "ping", "request_id": n})
    for n in range(RATE_LIMIT):
        assert await tab.receive() == {
            "type": "error",
            "code": "unknown_type",
            "message": "Unknown message type 'ping'.",
            "request_id": n,
        }
    await tab.send({"type": "add_item", "item_id": item.pk, "request_id": "excess"})
    error = await tab.receive()
    assert error["type"] == "error" and error["code"] == "rate_limited"
    assert await tab.nothing_more()
    assert await state(cart) == (0, [])  # the excess message was not processed
    await asyncio.sleep(1.05)
    replies = await tab.request({"type": "add_item", "item_id": item.pk})
    assert replies[-1]["type"] == "ok"
    assert await state(cart) == (1, [(item.pk, 1)])


async def test_every_tab_of_a_cart_receives_every_change(catalogue, cart, open_tab):
    first, second = await open_tab(cart, page="/"), await open_tab(cart, page="/checkout/")
    stranger = await open_tab(await database_sync_to_async(Cart.objects.create)())
    item = catalogue["plenty"]
    await first.request({"type": "add_item", "item_id": item.pk})
    assert_cart_message(await second.receive(), cart, [(item.pk, 1)])
    await second.request({"type": "add_item", "item_id": item.pk})
    assert_cart_message(await first.receive(), cart, [(item.pk, 2)])
    await second.request({"type": "remove_item", "item_id": item.pk})
    assert_cart_message(await first.receive(), cart, [(item.pk, 1)])
    # The tab that made a change gets its cart once, not echoed again from the group.
    assert await first.nothing_more() and await second.nothing_more()
    assert await stranger.nothing_more()


async def test_messages_that_need_no_database_do_not_wait_for_its_thread(catalogue, cart, open_tab):
    """A cart change from another tab and a refused frame are handled on the event loop
    alone: with the database thread busy, both still reach the tab (channels' own dispatch
    would first queue a connection clean-up on that thread behind the busy work)."""
    tab = await open_tab(cart)
    await tab.send({"type": "ping"})  # answered once the connect has run to its end
    assert (await tab.receive())["code"] == "unknown_type"
    busy, release = threading.Event(), threading.Event()

    def occupy_database_thread() -> None:
        busy.set()
        release.wait(WAIT_SECONDS)

    occupied = asyncio.ensure_future(database_sync_to_async(occupy_database_thread)())
    try:
        assert await asyncio.to_thread(busy.wait, WAIT_SECONDS)
        snapshot = {"id": str(cart.id), "revision": 5, "items": [], "total_quantity": 0}
        await publish_cart(snapshot)
        assert_cart_message(await tab.receive(), cart, [])
        await tab.send_text("not json")
        error = await tab.receive()
        assert error["type"] == "error" and error["code"] == "invalid_message"
    finally:
        release.set()
        await occupied


async def test_a_cart_action_works_after_the_database_connection_was_closed(
    catalogue, cart, open_tab
):
    """No clean-up runs before a message any more: the database call itself opens a new
    connection when the kept one was closed under it."""
    tab = await open_tab(cart)
    item = catalogue["plenty"]
    assert (await tab.request({"type": "add_item", "item_id": item.pk}))[-1]["type"] == "ok"
    await database_sync_to_async(close_connection)()  # the database thread's
    assert (await tab.request({"type": "add_item", "item_id": item.pk}))[-1]["type"] == "ok"
    assert await state(cart) == (2, [(item.pk, 2)])


def close_connection() -> None:
    connection.close()


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def kill_backend(pid: int) -> None:
    """End a PostgreSQL session from the server's side, as a restart would (from a
    connection of this thread's own, closed after)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
            assert cursor.fetchone()[0]
    finally:
        connection.close()


@pytest.mark.parametrize("database", ["postgres"], indirect=True)
async def test_a_killed_database_connection_fails_one_action_and_is_replaced(catalogue, cart):
    """A connection the server ended (a restart, an idle timeout) fails the one action that
    finds out (the socket closes with 1011), and the database thread closes it after that
    call, so the page's next socket works. (As before: channels' clean-up before every
    message could not tell either.)"""
    comm = communicator(cookie=cart_cookie(cart))
    assert (await comm.connect())[0]
    tab = Tab(comm)
    await tab.receive()
    item = catalogue["plenty"]
    assert (await tab.request({"type": "add_item", "item_id": item.pk}))[-1]["type"] == "ok"
    await asyncio.to_thread(kill_backend, await database_sync_to_async(backend_pid)())
    with pytest.raises(OperationalError):
        await tab.request({"type": "add_item", "item_id": item.pk})
    again = Tab(communicator(cookie=cart_cookie(cart)))
    assert (await again.communicator.connect())[0]
    await again.receive()
    assert (await again.request({"type": "add_item", "item_id": item.pk}))[-1]["type"] == "ok"
    await again.communicator.disconnect()
    assert await state(cart) == (2, [(item.pk, 2)])


async def test_a_cart_survives_reconnects(catalogue, cart, open_tab):
    tab = await open_tab(cart)
    await tab.request({"type": "add_item", "item_id": catalogue["plenty"].pk})
    await tab.communicator.disconnect()
    again = await open_tab(cart)
    assert_cart_message(again.first, cart, [(catalogue["plenty"].pk, 1)])


async def test_stock_level_changes_are_pushed_to_every_page(catalogue, cart, open_tab):
    item = catalogue["plenty"]  # 12: high
    tab = await open_tab(cart)
    other_cart_tab = await open_tab(await database_sync_to_async(Cart.objects.create)())

    async def set_stock(stock: int) -> None:
        def save() -> None:
            fresh = Item.objects.get(pk=item.pk)
            fresh.stock = stock
            fresh.save()

        await database_sync_to_async(save)()

    await set_stock(11)  # still high: nothing to push
    assert await tab.nothing_more()
    await set_stock(3)
    for page in (tab, other_cart_tab):
        assert await page.receive() == {"type": "stock", "item_id": item.pk, "level": "low"}
    await set_stock(0)
    assert await tab.receive() == {"type": "stock", "item_id": item.pk, "level": "out"}
    assert await tab.nothing_more()


async def test_checkout_empties_every_tab_and_pushes_stock(catalogue, cart, open_tab):
    item = catalogue["two_left"]  # 2: low -> 0: out
    await database_sync_to_async(CartItem.objects.create)(cart=cart, item=item, quantity=2)
    first, second = await open_tab(cart), await open_tab(cart)
    onlooker = await open_tab(await database_sync_to_async(Cart.objects.create)())
    key = await database_sync_to_async(session_with_cart)(cart)

    def buy() -> int:
        client = Client()
        client.cookies["sessionid"] = key
        return client.post("/checkout/").status_code

    assert await database_sync_to_async(buy)() == 302
    for tab in (first, second):
        messages = [await tab.receive(), await tab.receive()]
        carts = [m for m in messages if m["type"] == "cart"]
        assert len(carts) == 1
        assert_cart_message(carts[0], cart, [])
        assert {"type": "stock", "item_id": item.pk, "level": "out"} in messages
    assert await onlooker.receive() == {"type": "stock", "item_id": item.pk, "level": "out"}
    assert await onlooker.nothing_more()


async def test_disallowed_origin_is_refused_at_the_handshake(cart):
    key = await database_sync_to_async(session_with_cart)(cart)
    comm = communicator(key, origin="http://evil.example")
    connected, _ = await comm.connect()
    assert not connected
    allowed = communicator(key)
    connected, _ = await allowed.connect()
    assert connected
    await allowed.disconnect()


@pytest.mark.parametrize("cookies", ["none", "empty_session", "forged", "wrong_salt"])
async def test_a_handshake_that_names_no_cart_gets_no_cart_and_is_closed(cart, cookies):
    key, cookie = None, None
    if cookies == "empty_session":
        key = await database_sync_to_async(session_with_cart)(None)
    elif cookies == "forged":
        cookie = f"{settings.CART_COOKIE_NAME}={cart.id}"  # unsigned
    elif cookies == "wrong_salt":
        cookie = f"{settings.CART_COOKIE_NAME}={signing.Signer().sign(str(cart.id))}"
    comm = communicator(key, cookie=cookie)
    connected, _ = await comm.connect()
    assert connected
    error = json.loads(await comm.receive_from())
    assert error["type"] == "error" and error["code"] == "no_cart"
    closed = await comm.receive_output()
    assert closed == {"type": "websocket.close", "code": NO_CART_CLOSE_CODE}


async def test_a_cart_without_a_row_is_empty_and_its_first_change_creates_it(catalogue, open_tab):
    """A page view names a cart without writing it (shop.identity): the socket shows it
    empty, and the first add_item creates its row, anonymous."""
    cart_id = str(uuid.uuid4())
    tab = await open_tab(cart_id)
    assert tab.first == {
        "type": "cart",
        "cart": {"id": cart_id, "items": [], "total_quantity": 0},
    }
    assert not await database_sync_to_async(Cart.objects.filter(pk=cart_id).exists)()
    item = catalogue["plenty"]
    [error] = await tab.request({"type": "remove_item", "item_id": item.pk})
    assert error["code"] == "not_found"
    [error] = await tab.request({"type": "add_item", "item_id": catalogue["sold_out"].pk})
    assert error["code"] == "out_of_stock"
    assert not await database_sync_to_async(Cart.objects.filter(pk=cart_id).exists)()
    cart_msg, ok = await tab.request({"type": "add_item", "item_id": item.pk})
    assert ok["type"] == "ok" and cart_msg["cart"]["id"] == cart_id
    cart = await database_sync_to_async(Cart.objects.get)(pk=cart_id)
    assert cart.user_id is None
    assert await state(cart) == (1, [(item.pk, 1)])


async def test_a_session_from_before_the_cart_cookie_still_names_its_cart(catalogue, cart):
    await database_sync_to_async(CartItem.objects.create)(
        cart=cart, item=catalogue["plenty"], quantity=2
    )
    comm = communicator(await database_sync_to_async(session_with_cart)(cart))
    assert (await comm.connect())[0]
    assert_cart_message(json.loads(await comm.receive_from()), cart, [(catalogue["plenty"].pk, 2)])
    await comm.disconnect()


async def test_an_anonymous_socket_never_opens_a_users_cart(catalogue, cart, django_user_model):
    """A cart cookie whose cart now belongs to a user (the browser logged in, then out, or
    the cookie was planted) opens nothing: closed as a changed login (the page reloads and
    gets a fresh cart)."""
    user = await database_sync_to_async(django_user_model.objects.create_user)("ann")
    await database_sync_to_async(Cart.objects.filter(pk=cart.pk).update)(user=user)
    comm = communicator(cookie=cart_cookie(cart))
    assert (await comm.connect())[0]
    closed = await comm.receive_output()
    assert closed == {"type": "websocket.close", "code": LOGIN_CHANGED_CLOSE_CODE}


@pytest.mark.parametrize(
    ("query", "page"),
    [
        (b"page=/products/x/", "/products/x/"),
        (b"page=%2Fcheckout%2F", "/checkout/"),
        (b"", "/"),
        (b"page=checkout", "/"),
        (b"page=https://evil.example/", "/"),
        (b"page=/" + b"a" * 200, "/"),
        (b"page=/" + b"a" * 199, "/" + "a" * 199),
        (b"page=/a%0Ab", "/"),
    ],
)
def test_page_parameter_is_validated(query, page):
    assert clean_page(query) == page
