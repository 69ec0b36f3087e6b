"""Short-lived signed tokens that let a staff page open the staff socket.

A websocket handshake cannot carry a CSRF token, and the staff socket must not trust the
session cookie alone (any page on an allowed origin could open it). The page therefore asks
`/dashboard/token/` (session-authenticated, same origin) for a token and passes it in the
socket URL. The token is signed with its own salt, so no other signed value of the site (a
session, a password-reset link) can ever be replayed as one, and it lives just long enough
to connect; the page fetches a fresh one before every (re)connect.

A token is bound to the session it was issued in (a keyed digest of the session key, never
the key itself: tokens travel in URLs). The handshake must carry that session's cookie, and
the session must still be logged in as the token's user: a logout voids every token issued
in the session, and a token copied out of a URL is useless without the cookie.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.base_user import AbstractBaseUser
from django.core import signing

from shop.login_state import session_digest

SALT = "dashboard.staff-socket"
MAX_AGE = 60  # seconds


class InvalidToken(Exception):
    """The token is malformed, tampered with, or was signed for another purpose."""


class TokenExpired(InvalidToken):
    """The token was genuine but is older than `MAX_AGE`."""


@dataclass(frozen=True)
class TokenClaims:
    user_id: int
    session: str  # shop.login_state.session_digest of the session it was issued in


def issue_token(user: AbstractBaseUser, session_key: str) -> str:
    """Return a token naming `user` in the session `session_key`, valid for `MAX_AGE` s."""
    return signing.dumps(
        {"uid": user.pk, "username": user.get_username(), "sid": session_digest(session_key)},
        salt=SALT,
    )


def check_token(token: str, max_age: float = MAX_AGE) -> TokenClaims:
    """Return what `token` claims, or raise `InvalidToken` / `TokenExpired`.

    This only proves whom and which session the token was issued to; whether that session
    is still logged in as that user, and the user may still see the dashboard, is for the
    caller to check against the handshake's cookie and the database.
    """
    try:
        payload = signing.loads(token, salt=SALT, max_age=timedelta(seconds=max_age))
    except signing.SignatureExpired as exc:
        raise TokenExpired(str(exc)) from None
    except signing.BadSignature as exc:
        raise InvalidToken(str(exc)) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("uid"), int):
        raise InvalidToken("token payload does not name a user")
    if not isinstance(payload.get("sid"), str):
        raise InvalidToken("token payload does not name a session")
    return TokenClaims(payload["uid"], payload["sid"])
