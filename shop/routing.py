"""Shopper websocket routes. The handshake's cookies name the cart and the login state; the
consumer reads the session itself, in the same database call as the shopper (so it runs
behind the cookie parser only: channels' session and auth middleware would read the session
in a call of their own and wrap every frame sent); Origin is checked against ALLOWED_HOSTS."""

from channels.security.websocket import AllowedHostsOriginValidator
from channels.sessions import CookieMiddleware
from django.urls import path

from shop.consumers import ShoppingCartConsumer

SOCKET_PATH = "/ws/cart/"  # storefront pages hand it to their script (data-socket-path)

websocket_urlpatterns = [
    path(
        SOCKET_PATH.removeprefix("/"),
        AllowedHostsOriginValidator(CookieMiddleware(ShoppingCartConsumer.as_asgi())),
    ),
]
