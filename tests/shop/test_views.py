"""Storefront pages and the session cart."""

import re
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.db import connection
from django.utils import timezone

from shop import carts
from shop.carts import CART_SESSION_KEY
from shop.identity import cart_id_from_cookie
from shop.models import Cart, CartItem
from tests.shop.conftest import session_with_cart

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


def cookie_cart_id(client) -> str:
    """The cart id named by the client's cart cookie (checked: it must be genuine)."""
    cart_id = cart_id_from_cookie(client.cookies[settings.CART_COOKIE_NAME].value)
    assert cart_id is not None
    return cart_id


@pytest.mark.parametrize("path", ["/", "/products/test-boot/", "/checkout/", "/no-such-page/"])
def test_a_page_view_without_cookies_writes_nothing(client, catalogue, path):
    """A crawler fills no table: neither a session nor a cart row."""
    before = (Session.objects.count(), Cart.objects.count())
    response = client.get(path)
    assert (Session.objects.count(), Cart.objects.count()) == before == (0, 0)
    if response.status_code == 200:  # a storefront page names the cart in a signed cookie
        morsel = response.cookies[settings.CART_COOKIE_NAME]
        assert morsel["httponly"] and morsel["samesite"] == "Lax"
        assert int(morsel["max-age"]) == settings.SESSION_COOKIE_AGE
        assert f'data-cart-id="{cookie_cart_id(client)}"' in response.content.decode()


def test_the_cart_cookie_keeps_naming_the_same_cart(client, catalogue):
    client.get("/")
    cart_id = cookie_cart_id(client)
    client.get("/products/test-boot/")
    client.get("/checkout/")
    assert cookie_cart_id(client) == cart_id
    assert Cart.objects.count() == 0
    # A forged cookie (not signed by the site) names nothing: the visitor gets a fresh cart.
    client.cookies[settings.CART_COOKIE_NAME] = str(uuid.uuid4())
    client.get("/")
    assert cookie_cart_id(client) not in {cart_id, None}


def test_cart_widget_shows_the_cart(client, catalogue):
    client.get("/")
    cart = Cart.objects.create(pk=cookie_cart_id(client))
    CartItem.objects.create(cart=cart, item=catalogue["plenty"], quantity=3)
    page = client.get("/products/test-boot/").content.decode()
    assert re.search(r'id="cart-count" data-count="3">3<', page)
    assert f'data-remove="{catalogue["plenty"].pk}"' in page


def test_a_page_view_marks_an_old_cart_as_seen_once_a_day(client, catalogue):
    """Viewing the shop keeps a cart from looking abandoned to purge_carts."""
    client.get("/")
    cart = Cart.objects.create(pk=cookie_cart_id(client))
    long_ago = timezone.now() - timedelta(days=20)
    Cart.objects.filter(pk=cart.pk).update(updated_at=long_ago)
    client.get("/")
    cart.refresh_from_db()
    assert cart.updated_at > long_ago + timedelta(days=19)
    seen = cart.updated_at
    client.get("/")
    cart.refresh_from_db()
    assert cart.updated_at == seen  # not again within a day


def test_product_page(client, catalogue):
    response = client.get("/products/test-boot/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "<h1>Test Boot</h1>" in page and "Colour: Black" in page
    size_button(page, catalogue["plenty"].pk)


@pytest.mark.parametrize("slug", ["secret-boot", "no-such-product"])
def test_unreleased_and_unknown_products_are_404(client, catalogue, slug):
    assert client.get(f"/products/{slug}/").status_code == 404


def login(client, username: str, password: str):
    return client.post("/accounts/login/", {"username": username, "password": password})


def test_login_keeps_the_anonymous_cart_and_links_it(client, catalogue):
    user = get_user_model().objects.create_user("ann", password="pw-ann-123")
    client.get("/")
    cart = Cart.objects.create(pk=cookie_cart_id(client))
    CartItem.objects.create(cart=cart, item=catalogue["plenty"], quantity=1)
    response = login(client, "ann", "pw-ann-123")
    assert response.status_code == 302
    assert client.session[CART_SESSION_KEY] == str(cart.id)
    cart.refresh_from_db()
    assert cart.user == user
    page = client.get("/").content.decode()
    assert re.search(r'id="cart-count" data-count="1">1<', page)
    # Logging in again from another browser reopens the same cart.
    other = type(client)()
    login(other, "ann", "pw-ann-123")
    assert other.session[CART_SESSION_KEY] == str(cart.id)


def test_login_keeps_a_cart_of_a_session_from_before_the_cart_cookie(client, catalogue, cart):
    get_user_model().objects.create_user("ann", password="pw-ann-123")
    client.cookies[settings.SESSION_COOKIE_NAME] = session_with_cart(cart)
    login(client, "ann", "pw-ann-123")
    assert client.session[CART_SESSION_KEY] == str(cart.id)
    cart.refresh_from_db()
    assert cart.user.username == "ann"


def test_after_logout_the_browser_gets_a_fresh_cart(client, catalogue):
    """The cookie still names the cart the login took over; it is the user's now."""
    get_user_model().objects.create_user("ann", password="pw-ann-123")
    client.get("/")
    cart = Cart.objects.create(pk=cookie_cart_id(client))
    CartItem.objects.create(cart=cart, item=catalogue["plenty"], quantity=1)
    login(client, "ann", "pw-ann-123")
    client.post("/accounts/logout/")
    page = client.get("/").content.decode()
    assert re.search(r'id="cart-count" data-count="0">0<', page)
    assert cookie_cart_id(client) != str(cart.id)
    cart.refresh_from_db()
    assert cart.user.username == "ann" and cart.lines.count() == 1


def test_a_logged_in_users_cart_is_created_for_them_by_the_first_change(client, catalogue):
    user = get_user_model().objects.create_user("bob", password="pw-bob-123")
    client.force_login(user)
    client.get("/")
    cart_id = client.session[CART_SESSION_KEY]
    client.get("/checkout/")
    assert client.session[CART_SESSION_KEY] == cart_id
    assert not Cart.objects.exists()
    carts.add_item(cart_id, catalogue["plenty"].pk, user.pk)
    assert Cart.objects.get().user == user
    # An anonymous change of a user's cart is refused and changes nothing.
    with pytest.raises(carts.NotYourCart):
        carts.add_item(cart_id, catalogue["plenty"].pk, None)
    assert Cart.objects.get().lines.get().quantity == 1


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


@pytest.mark.django_db(transaction=True)
def test_a_page_view_closes_its_database_connection(client):
    """Connections are kept for the sockets' one thread; under ASGI every page view runs in
    a thread of its own, so one it kept would never be used again (only closed by the
    garbage collector, an open file or a PostgreSQL backend until then)."""
    assert client.get("/").status_code == 200
    assert connection.connection is None
