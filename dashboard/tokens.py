"""Short-lived signed tokens that let a staff page open the staff socket.

A websocket handshake cannot carry a CSRF token, and the staff socket must not trust the
session cookie alone (any page on an allowed origin could open it). The page therefore asks
`/dashboard/token/` (session-authenticated, same origin) for a token and passes it in the
socket URL. The token is signed with its own salt, so no other signed value of the site (a
session, a password-reset link) can ever be replayed as one, and it lives just long enough
to connect; the page fetches a fresh one before every (re)connect.
"""

from django.contrib.auth.base_user import AbstractBaseUser
from django.core import signing

SALT = "dashboard.staff-socket"
MAX_AGE = 60  # seconds


class InvalidToken(Exception):
    """The token is malformed, tampered with, or was signed for another purpose."""


class TokenExpired(InvalidToken):
    """The token was genuine but is older than `MAX_AGE`."""


def issue_token(user: AbstractBaseUser) -> str:
    """Return a token naming `user`, valid for `MAX_AGE` seconds."""
    return signing.dumps({"uid": user.pk, "username": user.get_username()}, salt=SALT)


def check_token(token: str, max_age: float = MAX_AGE) -> int:
    """Return the user id named by `token`, or raise `InvalidToken` / `TokenExpired`.

    This only proves who the token was issued to; whether that user may still see the
    dashboard is for the caller to check against the database.
    """
    try:
        payload = signing.loads(token, salt=SALT, max_age=max_age)
    except signing.SignatureExpired as exc:
        raise TokenExpired(str(exc)) from None
    except signing.BadSignature as exc:
        raise InvalidToken(str(exc)) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("uid"), int):
        raise InvalidToken("token payload does not name a user")
    return payload["uid"]
