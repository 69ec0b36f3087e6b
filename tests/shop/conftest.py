"""Fixtures of the storefront tests: a small catalogue, carts in real database sessions and
shopper sockets connected through the project's ASGI application."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore

from shop.asgi import application
from shop.carts import CART_SESSION_KEY
from shop.identity import cart_cookie_value
from shop.models import Cart, CartItem, Item, Product
from tests.channel_layer import fresh_channel_layer  # noqa: F401 (autouse here)

ALLOWED_ORIGIN = "http://127.0.0.1:8000"


@pytest.fixture
def catalogue(db) -> dict[str, Item]:
    """Items by name: plenty, two_left, sold_out, unreleased, plus `other` (another size)."""
    boots = Product.objects.create(
        name="Test Boot",
        brand="Acme",
        colour="Black",
        price=Decimal("120.00"),
        slug="test-boot",
        released=True,
    )
    hidden = Product.objects.create(
        name="Secret Boot",
        brand="Acme",
        colour="Navy",
        price=Decimal("99.50"),
        slug="secret-boot",
        released=False,
    )
    return {
        "plenty": Item.objects.create(product=boots, size="42", stock=12, position=2),
        "two_left": Item.objects.create(product=boots, size="41", stock=2, position=1),
        "sold_out": Item.objects.create(product=boots, size="40", stock=0, position=0),
        "other": Item.objects.create(product=boots, size="43", stock=5, position=3),
        "unreleased": Item.objects.create(product=hidden, size="42", stock=5),
    }


def cart_cookie(cart: Cart | str) -> str:
    """The Cookie header of an anonymous browser whose cart cookie names `cart`."""
    return f"{settings.CART_COOKIE_NAME}={cart_cookie_value(str(getattr(cart, 'id', cart)))}"


def session_with_cart(cart: Cart | None = None) -> str:
    """A saved database session holding the cart's id, as sessions made before the cart
    cookie did (and logged-in sessions do); returns the session key."""
    session = SessionStore()
    if cart is not None:
        session[CART_SESSION_KEY] = str(cart.id)
    session.save()
    return session.session_key


def cart_state(cart: Cart) -> tuple[int, list[tuple[int, int]]]:
    """(revision, [(item_id, quantity)]) as stored in the database."""
    cart.refresh_from_db()
    lines = CartItem.objects.filter(cart=cart).order_by("item_id")
    return cart.revision, [(line.item_id, line.quantity) for line in lines]


class Tab:
    """One shopper socket, as a browser tab would open it."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.communicator = communicator

    async def send(self, message: Any) -> None:
        await self.communicator.send_to(text_data=json.dumps(message))

    async def send_text(self, text: str) -> None:
        await self.communicator.send_to(text_data=text)

    async def send_bytes(self, data: bytes) -> None:
        await self.communicator.send_to(bytes_data=data)

    async def receive(self) -> dict[str, Any]:
        return json.loads(await self.communicator.receive_from(timeout=3))

    async def nothing_more(self) -> bool:
        """True if nothing arrives within a moment."""
        return await self.communicator.receive_nothing(timeout=0.2)

    async def request(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        """Send a change and return the replies up to and including ok/error."""
        await self.send(message)
        replies = []
        while not replies or replies[-1]["type"] not in {"ok", "error"}:
            replies.append(await self.receive())
        return replies


def communicator(
    session_key: str | None = None,
    origin: str = ALLOWED_ORIGIN,
    page: str = "/",
    cookie: str | None = None,
    client: tuple[str, int] | None = None,
) -> WebsocketCommunicator:
    """A shopper socket's handshake with the session cookie of `session_key` and/or the
    Cookie header `cookie`, from ASGI client address `client`."""
    headers = [(b"host", b"127.0.0.1:8000"), (b"origin", origin.encode())]
    cookies = [cookie] if cookie else []
    if session_key is not None:
        cookies.append(f"{settings.SESSION_COOKIE_NAME}={session_key}")
    if cookies:
        headers.append((b"cookie", "; ".join(cookies).encode()))
    comm = WebsocketCommunicator(application, f"/ws/cart/?page={page}", headers=headers)
    if client is not None:
        comm.scope["client"] = client  # (before the application first runs)
    return comm


@pytest.fixture
async def open_tab() -> AsyncIterator[Callable[..., Any]]:
    """open_tab(cart) connects a shopper socket of an anonymous browser whose cart cookie
    names the cart, and consumes its first cart message (returned as tab.first); every tab
    is disconnected at the end of the test."""
    communicators: list[WebsocketCommunicator] = []

    async def open_(cart: Cart, page: str = "/") -> Tab:
        comm = communicator(page=page, cookie=cart_cookie(cart))
        communicators.append(comm)
        connected, _ = await comm.connect()
        assert connected
        tab = Tab(comm)
        tab.first = await tab.receive()
        return tab

    yield open_
    for comm in communicators:
        await comm.disconnect()


@pytest.fixture
def cart(db) -> Cart:
    return Cart.objects.create()
