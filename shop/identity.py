"""Which cart a storefront page or a shopper socket belongs to, and under which login.

A cart is named by a cart id (a UUID) before it has a row (see shop.carts):

- An anonymous shopper carries the id in a signed cookie (`settings.CART_COOKIE_NAME`). A
  page view without one makes a fresh id and sets the cookie, and writes nothing to the
  database: a crawler leaves neither a session nor a cart behind. The row appears with the
  first `add_item`. (A session from before this cookie that holds a cart id still names
  that cart, so no cart was lost by the change.)
- A logged-in user carries it in the session, where login put it (shop.signals).

An id is used only while the cart has no row or its row belongs to that shopper (None for
anonymous): after a logout the cookie still names the cart that the login took over, and
the next page view gets a fresh id. A websocket cannot set cookies, so sockets only read
them: the page view before a socket gave the browser what the socket needs.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user
from django.core import signing
from django.http import HttpRequest, HttpResponse
from django.http.cookie import parse_cookie
from django.utils import timezone

from shop.carts import CART_SESSION_KEY, parse_cart_id, session_cart_id
from shop.login_state import anonymous_cart_group, session_group
from shop.models import Cart

_COOKIE_SALT = "shop.cart-cookie"
# A page view marks its cart as in use at most this often (one write a day per cart, none
# for a cart without a row): `purge_carts` removes carts nobody changed or viewed for days.
SEEN_EVERY = timedelta(days=1)


def cart_cookie_value(cart_id: str) -> str:
    return signing.Signer(salt=_COOKIE_SALT).sign(cart_id)


def cart_id_from_cookie(value: str | None) -> str | None:
    """The cart id of a genuine cart cookie, else None."""
    if not value:
        return None
    try:
        pk = parse_cart_id(signing.Signer(salt=_COOKIE_SALT).unsign(value))
    except signing.BadSignature:
        return None
    return str(pk) if pk else None


def _anonymous_cart_id(cookies: dict[str, str], session: Any) -> str | None:
    """The cart cookie's id, else a (pre-cookie) session's; reads the session only if its
    cookie was sent, so a cookieless request costs no query."""
    cart_id = cart_id_from_cookie(cookies.get(settings.CART_COOKIE_NAME))
    if cart_id is None and session is not None and session.session_key:
        cart_id = session_cart_id(session)
    return cart_id


@dataclass(frozen=True)
class Shopper:
    """The identity a shopper socket was opened under."""

    cart_id: str
    user_id: int | None  # the owner the cart's row must have; None: anonymous
    session_key: str | None  # a logged-in shopper's session

    @property
    def groups(self) -> list[str]:
        """The channel-layer groups of its login state (shop.login_state)."""
        if self.session_key is not None:
            return [session_group(self.session_key)]
        return [anonymous_cart_group(self.cart_id)]

    @property
    def limit_key(self) -> str:
        """Whose sockets count together against SHOPPER_SOCKETS_PER_SESSION."""
        return self.groups[0]


def handshake_cookies(scope: dict[str, Any]) -> dict[str, str]:
    """The cookies of a websocket handshake (its ASGI scope's `Cookie` header), parsed as
    channels' CookieMiddleware and Django do."""
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            return parse_cookie(value.decode("latin1"))
    return {}


def needs_session(cookies: dict[str, str]) -> bool:
    """Whether finding a socket's shopper reads the database: only a session cookie does."""
    return bool(cookies.get(settings.SESSION_COOKIE_NAME))


def socket_shopper(cookies: dict[str, str]) -> tuple[Shopper | None, str | None]:
    """The shopper of a socket's handshake cookies (None if they name no cart) and its
    username if logged in. Blocking when a session cookie was sent (`needs_session`): the
    session is read once, and its user if it names one (as Django's auth middleware would;
    a session whose user changed their password is ended)."""
    key = cookies.get(settings.SESSION_COOKIE_NAME)
    session = import_module(settings.SESSION_ENGINE).SessionStore(key) if key else None
    if session is not None:
        request = HttpRequest()  # what the auth middleware would hand get_user
        request.session = session
        user = get_user(request)
        if user.is_authenticated:
            cart_id = session_cart_id(session)
            if cart_id is None:
                return None, None
            return Shopper(cart_id, user.pk, session.session_key), user.get_username()
    cart_id = _anonymous_cart_id(cookies, session)
    return (Shopper(cart_id, None, None) if cart_id else None), None


def still_logged_in(shopper: Shopper) -> bool:
    """Whether a logged-in shopper's session still exists (a logout or a later login has
    deleted it). Blocking."""
    if shopper.session_key is None:
        return True
    store = import_module(settings.SESSION_ENGINE).SessionStore
    return store().exists(shopper.session_key)


def page_cart(request: HttpRequest) -> tuple[str, Cart | None]:
    """The cart id of a storefront page view and the cart's row, if it has one.

    Anonymous: from the cart cookie (a fresh id if there is none or its cart now belongs to
    a user); `remember_cart` then sets the cookie on the response. Logged in: from the
    session (a fresh id, kept in the session, if it has none or its cart is not the user's).
    """
    user = request.user
    owner = user.pk if user.is_authenticated else None
    if owner is None:
        cart_id = _anonymous_cart_id(request.COOKIES, request.session)
    else:
        cart_id = session_cart_id(request.session)
    cart = Cart.objects.filter(pk=cart_id).first() if cart_id else None
    if cart_id is None or (cart is not None and cart.user_id != owner):
        cart_id, cart = str(uuid.uuid4()), None
        if owner is not None:
            request.session[CART_SESSION_KEY] = cart_id
    if owner is None:
        request._cart_cookie = cart_id  # type: ignore[attr-defined]  # see remember_cart
    if cart is not None and timezone.now() - cart.updated_at > SEEN_EVERY:
        Cart.objects.filter(pk=cart.pk).update(updated_at=timezone.now())
    return cart_id, cart


def remember_cart(request: HttpRequest, response: HttpResponse) -> None:
    """Set (or renew: it lives as long as a session) an anonymous page's cart cookie."""
    cart_id = getattr(request, "_cart_cookie", None)
    if cart_id is not None:
        response.set_cookie(
            settings.CART_COOKIE_NAME,
            cart_cookie_value(cart_id),
            max_age=settings.SESSION_COOKIE_AGE,
            secure=settings.SESSION_COOKIE_SECURE,
            httponly=True,
            samesite="Lax",
        )
