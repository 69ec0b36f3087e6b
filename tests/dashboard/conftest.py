"""Fixtures of the dashboard tests: users, a hub of this test's event loop fed by the test
itself (no tracker needed), and staff sockets through the project's ASGI application."""

from collections.abc import AsyncIterator

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore

import dashboard.consumers
from dashboard.hub import DashboardHub
from dashboard.tokens import issue_token
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
async def hub(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DashboardHub]:
    """The hub the test's staff sockets get instead of the process's (which follows the
    tracker): fed by the test itself."""
    hub = DashboardHub(interval=0.02)

    async def get_hub() -> DashboardHub:
        return hub

    monkeypatch.setattr(dashboard.consumers, "get_hub", get_hub)
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


def login_session(user) -> str:
    """A saved session of `user` logged in, as a browser holds it; returns its key."""
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return session.session_key


def session_cookie(session_key: str) -> str:
    return f"{settings.SESSION_COOKIE_NAME}={session_key}"


def staff_login(user) -> tuple[str, str]:
    """(token, Cookie header) of a page of `user` logged in: a token issued in a fresh
    session, and that session's cookie."""
    key = login_session(user)
    return issue_token(user, key), session_cookie(key)


async def staff_socket_of(user, origin: bytes | None = ALLOWED_ORIGIN) -> WebsocketCommunicator:
    """The staff socket a page of `user` opens: token and session cookie."""
    token, cookie = await database_sync_to_async(staff_login)(user)
    return staff_socket(token, origin=origin, cookie=cookie)
