"""Authentication of the staff socket: the signed token in its URL (`?token=...`) and the
session cookie of the session the token was issued in (dashboard.tokens)."""

import logging
from typing import Any
from urllib.parse import parse_qs

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable
from channels.db import database_sync_to_async
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib.auth import get_user
from django.contrib.auth.base_user import AbstractBaseUser
from django.http import HttpRequest
from django.utils.crypto import constant_time_compare
from django.utils.module_loading import import_string

from shop.login_state import session_digest

from .tokens import InvalidToken, check_token

logger = logging.getLogger(__name__)


def staff_user_of_session(session_key: str, user_id: int) -> AbstractBaseUser | None:
    """The user if the session still exists, is logged in as `user_id` (with a valid auth
    hash: a password change logs other sessions out) and the user is still active staff;
    else None. Blocking."""
    request = HttpRequest()  # get_user reads nothing but its session
    request.session = import_string(f"{settings.SESSION_ENGINE}.SessionStore")(session_key)
    user = get_user(request)
    if user.pk != user_id or not (user.is_active and user.is_staff):
        return None
    return user


class StaffTokenAuthMiddleware:
    """Lets a websocket through only with a valid, unexpired token naming active staff, sent
    with the cookie of the session the token was issued in, that session still logged in
    as that user. Runs inside channels' SessionMiddleware.

    Anything else is closed before it is accepted, which the server answers with HTTP 403.
    The staff user is put in `scope["user"]`. The session cookie alone proves nothing: the
    token, fetched by same-origin script, is what proves the page is ours.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(
        self, scope: dict[str, Any], receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> Any:
        user = await self._staff_user(scope)
        if user is None:
            return await WebsocketDenier()(scope, receive, send)
        return await self.inner(dict(scope, user=user), receive, send)

    async def _staff_user(self, scope: dict[str, Any]) -> AbstractBaseUser | None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        token = query.get("token", [""])[0]
        try:
            claims = check_token(token)
        except InvalidToken as exc:
            logger.info("staff socket refused: %s", exc)
            return None
        session_key = scope["session"].session_key
        if not session_key or not constant_time_compare(
            session_digest(session_key), claims.session
        ):
            logger.info("staff socket refused: not sent with the session of its token")
            return None
        user: AbstractBaseUser | None = await database_sync_to_async(staff_user_of_session)(
            session_key, claims.user_id
        )
        if user is None:
            logger.info(
                "staff socket refused: session ended, or user %s is gone, inactive or not staff",
                claims.user_id,
            )
        return user
