"""Storefront pages and the session cart."""

import re

import pytest
from django.contrib.auth import get_user_model

from shop.carts import CART_SESSION_KEY
from shop.models import Cart, CartItem

pytestmark = pytest.mark.usefixtures("django_database")  # on SQLite and on PostgreSQL


def size_button(page: str, item_id: int) -> str:
    match = re.search(rf'<button[^>]*data-item-id="{item_id}"[^>]*>', page)
    assert match, f"no size button for item {item_id}"
    return match.group(0)


def test_home_lists_released_products_with_stock_levels(client, catalogue):
    response = client.get("/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "Test Boot" in page and "€120.00" in page and "Acme" in page
    assert "Secret Boot" not in page
    assert 'data-level="high"' in size_button(page, catalogue["plenty"].pk)
    assert 'data-level="low"' in size_button(page, catalogue["two_left"].pk)
    assert 'data-level="medium"' in size_button(page, catalogue["other"].pk)
    sold_out = size_button(page, catalogue["sold_out"].pk)
    assert 'data-level="out"' in sold_out and "disabled" in sold_out
    assert "disabled" not in size_button(page, catalogue["plenty"].pk)
    assert 'src="/static/shop/cart.js"' in page


def test_first_page_view_creates_the_cart_and_keeps_it(client, catalogue):
    client.get("/")
    cart_id = client.session[CART_SESSION_KEY]
    assert Cart.objects.filter(pk=cart_id, user=None).exists()
    client.get("/products/test-boot/")
    client.get("/checkout/")
    assert client.session[CART_SESSION_KEY] == cart_id
    assert Cart.objects.count() == 1


def test_cart_widget_shows_the_cart(client, catalogue):
    client.get("/")
    cart = Cart.objects.get()
    CartItem.objects.create(cart=cart, item=catalogue["plenty"], quantity=3)
    page = client.get("/products/test-boot/").content.decode()
    assert re.search(r'id="cart-count" data-count="3">3<', page)
    assert f'data-remove="{catalogue["plenty"].pk}"' in page


def test_product_page(client, catalogue):
    response = client.get("/products/test-boot/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "<h1>Test Boot</h1>" in page and "Colour: Black" in page
    size_button(page, catalogue["plenty"].pk)


@pytest.mark.parametrize("slug", ["secret-boot", "no-such-product"])
def test_unreleased_and_unknown_products_are_404(client, catalogue, slug):
    assert client.get(f"/products/{slug}/").status_code == 404


def test_login_keeps_the_session_cart_and_links_it(client, catalogue):
    user = get_user_model().objects.create_user("ann", password="pw-ann-123")
    client.get("/")
    cart = Cart.objects.get()
    CartItem.objects.create(cart=cart, item=catalogue["plenty"], quantity=1)
    response = client.post("/accounts/login/", {"username": "ann", "password": "pw-ann-123"})
    assert response.status_code == 302
    assert client.session[CART_SESSION_KEY] == str(cart.id)
    cart.refresh_from_db()
    assert cart.user == user
    # Logging in again from another browser reopens the same cart.
    other = type(client)()
    other.post("/accounts/login/", {"username": "ann", "password": "pw-ann-123"})
    assert other.session[CART_SESSION_KEY] == str(cart.id)


def test_logged_in_users_new_cart_is_linked(client, catalogue):
    user = get_user_model().objects.create_user("bob", password="pw-bob-123")
    client.force_login(user)
    client.get("/")
    assert Cart.objects.get().user == user


def test_login_page_renders_in_the_site_layout(client):
    page = client.get("/accounts/login/").content.decode()
    assert "site-header" in page and 'name="username"' in page


def test_admin_pages_for_the_catalogue(admin_client, catalogue):
    for url in [
        "/admin/shop/product/",
        "/admin/shop/item/",
        "/admin/shop/cart/",
        f"/admin/shop/product/{catalogue['plenty'].product_id}/change/",
    ]:
        assert admin_client.get(url).status_code == 200, url
