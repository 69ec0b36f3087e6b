"""Sockets belong to the login state they were opened under (docs/protocol.md).

Every shopper and staff socket joins the channel-layer groups that name the login state it
was opened under: the group of its session (`session_group`; a logged-in shopper's or a
staff user's) and, for an anonymous shopper, the group of its cart (`anonymous_cart_group`:
the cart's own group, which every tab of the cart is in anyway, so an anonymous socket costs
one group_add, not two; the `login.changed` sent there says `"anonymous": true`, and a
logged-in tab of that cart, should there be one, stays open).
Login, logout and the re-linking of a cart end such a state: the request records the groups
(`end_login_state`, called by the signal receivers in shop.signals) and
`LoginStateMiddleware` sends `login.changed` to each of them once the request's session is
saved (the old session row deleted, the new one written), on every node through the channel
layer. Each socket then closes with `LOGIN_CHANGED_CLOSE_CODE`; the page reloads and its new
socket carries its new identity.

A message of the channel layer may be lost, so this is not the only guard: a shopper socket
checks before every change that its session still exists and that the cart's row still
belongs to its shopper (shop.carts), and a staff socket re-checks its session periodically.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.http import HttpRequest, HttpResponse
from django.utils.crypto import salted_hmac

from shop.broadcast import CART_GROUP_PREFIX, cart_group

# Close code of a socket whose login state ended (login, logout, cart re-linked, session
# gone). The page reloads: the new page view and socket carry the new login state.
LOGIN_CHANGED_CLOSE_CODE = 4002
LOGIN_CHANGED_EVENT = {"type": "login.changed"}
ANONYMOUS_LOGIN_CHANGED_EVENT = {"type": "login.changed", "anonymous": True}

_DIGEST_SALT = "shop.login-state"
_ENDED = "_ended_login_groups"


def session_digest(session_key: str) -> str:
    """A keyed digest that names a session without revealing its key (group names end up in
    Redis, staff socket tokens in URLs)."""
    return salted_hmac(_DIGEST_SALT, session_key, algorithm="sha256").hexdigest()[:40]


def session_group(session_key: str) -> str:
    return f"shop.login.{session_digest(session_key)}"


def anonymous_cart_group(cart_id: str) -> str:
    return cart_group(cart_id)


def end_login_state(request: HttpRequest, groups: Iterable[str]) -> None:
    """Close every socket in `groups` once this request is done with the session."""
    request.__dict__.setdefault(_ENDED, set()).update(groups)


class LoginStateMiddleware:
    """Tells the sockets of the login states this request ended (see the module docstring).

    It sits before SessionMiddleware, so by the time it sends, the logout's flush or the
    login's new session key is in the database: a socket that joins its group after the
    message went out finds its session gone when it checks.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        groups = request.__dict__.get(_ENDED)
        if groups:
            async_to_sync(_send)(sorted(groups))
        return response


async def _send(groups: list[str]) -> None:
    layer = get_channel_layer()
    for group in groups:
        anonymous = group.startswith(CART_GROUP_PREFIX)
        await layer.group_send(
            group, ANONYMOUS_LOGIN_CHANGED_EVENT if anonymous else LOGIN_CHANGED_EVENT
        )
