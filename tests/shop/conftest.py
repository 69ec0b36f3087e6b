"""Fixtures of the storefront tests: a small catalogue, carts in real database sessions and
shopper sockets connected through the project's ASGI application."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore

from shop.asgi import application
from shop.carts import CART_SESSION_KEY
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


def session_with_cart(cart: Cart | None = None) -> str:
    """A saved database session holding the cart's id; returns the session key."""
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
    session_key: str | None, origin: str = ALLOWED_ORIGIN, page: str = "/"
) -> WebsocketCommunicator:
    headers = [(b"host", b"127.0.0.1:8000"), (b"origin", origin.encode())]
    if session_key is not None:
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={session_key}".encode()))
    return WebsocketCommunicator(application, f"/ws/cart/?page={page}", headers=headers)


@pytest.fixture
async def open_tab() -> AsyncIterator[Callable[..., Any]]:
    """open_tab(cart) connects a shopper socket for the cart and consumes its first cart
    message (returned as tab.first); every tab is disconnected at the end of the test."""
    communicators: list[WebsocketCommunicator] = []
    sessions: dict[str, str] = {}  # tabs of one cart share the browser's session

    async def open_(cart: Cart, page: str = "/") -> Tab:
        key = sessions.get(str(cart.id))
        if key is None:
            key = sessions[str(cart.id)] = await database_sync_to_async(session_with_cart)(cart)
        comm = communicator(key, page=page)
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
