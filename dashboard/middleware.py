"""Authentication of the staff socket by the signed token in its URL (`?token=...`)."""

import logging
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.security.websocket import WebsocketDenier
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser

from .tokens import InvalidToken, check_token

logger = logging.getLogger(__name__)


def get_staff_user(user_id: int) -> AbstractBaseUser | None:
    """The user if it still exists, is active and is staff; else None. Blocking."""
    return get_user_model().objects.filter(pk=user_id, is_active=True, is_staff=True).first()


class StaffTokenAuthMiddleware:
    """Lets a websocket through only with a valid, unexpired token naming active staff.

    Anything else is closed before it is accepted, which the server answers with HTTP 403.
    The staff user is put in `scope["user"]`. The session cookie is deliberately ignored:
    the token, fetched by same-origin script, is what proves the page is ours.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        user = await self._staff_user(scope)
        if user is None:
            return await WebsocketDenier()(scope, receive, send)
        return await self.inner(dict(scope, user=user), receive, send)

    async def _staff_user(self, scope: dict) -> AbstractBaseUser | None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        token = query.get("token", [""])[0]
        try:
            user_id = check_token(token)
        except InvalidToken as exc:
            logger.info("staff socket refused: %s", exc)
            return None
        user = await database_sync_to_async(get_staff_user)(user_id)
        if user is None:
            logger.info("staff socket refused: user %s is gone, inactive or not staff", user_id)
        return user
