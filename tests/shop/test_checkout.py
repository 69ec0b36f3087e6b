"""Buying a cart: all lines or none, stock never negative, even for concurrent buyers."""

import threading

import pytest
from django.conf import settings
from django.db import connection

from shop import carts
from shop.identity import cart_cookie_value
from shop.models import Cart, CartItem, Item
from tests.shop.conftest import cart_state


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


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("buyers", "units"), [(2, 1), (6, 3)])
def test_concurrent_buyers_never_oversell(catalogue, buyers, units):
    item = catalogue["plenty"]
    Item.objects.filter(pk=item.pk).update(stock=units)
    cart_ids = []
    for _ in range(buyers):
        cart = Cart.objects.create()
        CartItem.objects.create(cart=cart, item=item, quantity=1)
        cart_ids.append(str(cart.id))
    start = threading.Barrier(buyers)
    outcomes: list[str] = []

    def buy(cart_id: str) -> None:
        try:
            start.wait()
            try:
                carts.checkout(cart_id)
                outcomes.append("bought")
            except carts.SoldOut:
                outcomes.append("sold out")
        finally:
            connection.close()

    threads = [threading.Thread(target=buy, args=(cart_id,)) for cart_id in cart_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["bought"] * units + ["sold out"] * (buyers - units)
    assert stock(item) == 0
    assert CartItem.objects.filter(item=item).count() == buyers - units
