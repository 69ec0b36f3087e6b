"""Fixtures of the dashboard tests: users, a hub of this test's event loop fed by the test
itself (no tracker needed), and staff sockets through the project's ASGI application."""

from collections.abc import AsyncIterator

import pytest
from channels.testing import WebsocketCommunicator

from dashboard.hub import DashboardHub, install_hub
from shop.asgi import application
from tests.channel_layer import fresh_channel_layer  # noqa: F401 (autouse here)

ALLOWED_ORIGIN = b"http://localhost:8000"


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("staffer", password="pw-staff-1", is_staff=True)


@pytest.fixture
def shopper(django_user_model):
    return django_user_model.objects.create_user("shopper", password="pw-shop-1")


@pytest.fixture
async def hub() -> AsyncIterator[DashboardHub]:
    """This loop's hub, as a process would have it, but fed by the test."""
    hub = DashboardHub(interval=0.02)
    install_hub(hub)
    yield hub
    hub.close()


def staff_socket(
    token: str | None, origin: bytes | None = ALLOWED_ORIGIN, cookie: str | None = None
) -> WebsocketCommunicator:
    path = "/ws/dashboard/" if token is None else f"/ws/dashboard/?token={token}"
    headers = []
    if origin is not None:
        headers.append((b"origin", origin))
    if cookie is not None:
        headers.append((b"cookie", cookie.encode()))
    return WebsocketCommunicator(application, path, headers=headers)
