"""Buying a cart: all lines or none, stock never negative, even for concurrent buyers."""

import threading
import time

import pytest
from django.conf import settings
from django.db import connection

from shop import carts
from shop.identity import cart_cookie_value
from shop.models import Cart, CartItem, Item
from tests.shop.conftest import cart_state

pytestmark = pytest.mark.usefixtures("django_database")  # on SQLite and on PostgreSQL


def client_for(client, cart):
    """The client as the anonymous browser whose cart cookie names `cart`."""
    client.cookies[settings.CART_COOKIE_NAME] = cart_cookie_value(str(cart.id))
    return client


def stock(item: Item) -> int:
    item.refresh_from_db()
    return item.stock


def test_checkout_page_shows_the_cart(client, catalogue, cart):
    CartItem.objects.create(cart=cart, item=catalogue["plenty"], quantity=2)
    CartItem.objects.create(cart=cart, item=catalogue["other"], quantity=1)
    response = client_for(client, cart).get("/checkout/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "Test Boot" in page and "€240.00" in page and "€360.00" in page
    assert "Buy now" in page


def test_successful_purchase_takes_stock_and_empties_the_cart(client, catalogue, cart):
    CartItem.objects.create(cart=cart, item=catalogue["plenty"], quantity=2)
    CartItem.objects.create(cart=cart, item=catalogue["two_left"], quantity=2)
    response = client_for(client, cart).post("/checkout/", follow=True)
    assert response.redirect_chain == [("/checkout/", 302)]
    assert "Thank you! Your order of 4 items is placed." in response.content.decode()
    assert stock(catalogue["plenty"]) == 10
    assert stock(catalogue["two_left"]) == 0
    assert cart_state(cart) == (1, [])


def test_sold_out_line_refuses_the_whole_purchase(client, catalogue, cart):
    CartItem.objects.create(cart=cart, item=catalogue["plenty"], quantity=2)
    CartItem.objects.create(cart=cart, item=catalogue["two_left"], quantity=2)
    # Someone else bought one of the last two after they went into this cart.
    Item.objects.filter(pk=catalogue["two_left"].pk).update(stock=1)
    before = cart_state(cart)
    response = client_for(client, cart).post("/checkout/")
    assert response.status_code == 409
    page = response.content.decode()
    assert "Sorry, Acme Test Boot in size 41 is sold out" in page
    assert "only 1 left" in page and "Nothing was bought" in page
    # Nothing changed: the line bought first (lower item id) was rolled back too.
    assert stock(catalogue["plenty"]) == 12
    assert stock(catalogue["two_left"]) == 1
    assert cart_state(cart) == before


def test_unreleased_product_cannot_be_bought(client, catalogue, cart):
    CartItem.objects.create(cart=cart, item=catalogue["unreleased"], quantity=1)
    response = client_for(client, cart).post("/checkout/")
    assert response.status_code == 409
    assert "sold out" in response.content.decode()
    assert stock(catalogue["unreleased"]) == 5


def test_empty_cart_cannot_be_bought(client, catalogue, cart):
    response = client_for(client, cart).post("/checkout/")
    assert response.status_code == 409
    assert "Your cart is empty." in response.content.decode()
    assert cart_state(cart) == (0, [])


# Bounded waits for the other thread; never reached when the code is right.
WAIT_SECONDS = 10


def carts_with_one_unit(item: Item, count: int) -> list[str]:
    """Ids of `count` new carts, each holding one unit of the item."""
    cart_ids = []
    for _ in range(count):
        cart = Cart.objects.create()
        CartItem.objects.create(cart=cart, item=item, quantity=1)
        cart_ids.append(str(cart.id))
    return cart_ids


def checkout_outcome(cart_id: str) -> str:
    """Buy the cart in this thread (with a connection of its own): "bought" or "sold out"."""
    try:
        carts.checkout(cart_id)
        return "bought"
    except carts.SoldOut:
        return "sold out"
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("buyers", "units"), [(2, 1), (6, 3)])
def test_concurrent_buyers_never_oversell(catalogue, buyers, units):
    item = catalogue["plenty"]
    Item.objects.filter(pk=item.pk).update(stock=units)
    cart_ids = carts_with_one_unit(item, buyers)
    start = threading.Barrier(buyers)
    outcomes: list[str] = []

    def buy(cart_id: str) -> None:
        start.wait()
        outcomes.append(checkout_outcome(cart_id))

    threads = [threading.Thread(target=buy, args=(cart_id,)) for cart_id in cart_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["bought"] * units + ["sold out"] * (buyers - units)
    assert stock(item) == 0
    assert CartItem.objects.filter(item=item).count() == buyers - units


def blocked_queries() -> list[str]:
    """The statements of this database's sessions that wait for another session's lock."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT query FROM pg_stat_activity"
            " WHERE datname = current_database() AND cardinality(pg_blocking_pids(pid)) > 0"
        )
        return [query for (query,) in cursor.fetchall()]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("database", ["postgres"], indirect=True)  # row locks: PostgreSQL's case
def test_last_unit_bought_in_two_open_transactions_goes_to_the_first(catalogue):
    """Both buyers' transactions are open at once: A has taken the last unit and not yet
    committed; B's guarded UPDATE of that row waits for A's row lock (seen in
    pg_stat_activity). When A commits, B's UPDATE re-reads the row, finds no unit left and B
    is told it is sold out. (SQLite takes one lock for the whole database at BEGIN, so there
    B's transaction cannot even begin before A's ends: the test above covers it.)"""
    item = catalogue["plenty"]
    Item.objects.filter(pk=item.pk).update(stock=1)
    cart_a, cart_b = carts_with_one_unit(item, 2)
    a_took_it, a_may_commit = threading.Event(), threading.Event()
    outcomes: dict[str, str] = {}

    def hold_after_taking_stock(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if sql.startswith('UPDATE "shop_item"'):
            a_took_it.set()
            a_may_commit.wait(WAIT_SECONDS)
        return result

    def buy_a() -> None:
        with connection.execute_wrapper(hold_after_taking_stock):
            outcomes["a"] = checkout_outcome(cart_a)

    def buy_b() -> None:
        outcomes["b"] = checkout_outcome(cart_b)

    a, b = threading.Thread(target=buy_a), threading.Thread(target=buy_b)
    a.start()
    a_took_it.wait(WAIT_SECONDS)
    b.start()
    try:
        assert a_took_it.is_set(), "A never took the stock"
        deadline = time.monotonic() + WAIT_SECONDS
        while not (waiting := blocked_queries()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(waiting) == 1 and '"shop_item"' in waiting[0], waiting
        assert b.is_alive() and "b" not in outcomes
    finally:
        a_may_commit.set()
        a.join(WAIT_SECONDS)
        b.join(WAIT_SECONDS)
    assert outcomes == {"a": "bought", "b": "sold out"}
    assert stock(item) == 0
    assert CartItem.objects.filter(cart_id=cart_b).count() == 1  # B's cart is untouched
    assert not CartItem.objects.filter(cart_id=cart_a).exists()
