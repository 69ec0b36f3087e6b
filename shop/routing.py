"""Shopper websocket routes. The handshake's cookies name the cart and the login state; the
consumer parses them (shop.identity.handshake_cookies) and reads the session itself, in the
same database call as the shopper: channels' session and auth middleware would read the
session in a call of their own and wrap every frame sent, and its cookie middleware would
keep a copy of the scope (and a coroutine) alive for as long as the socket is open. Origin
is checked against ALLOWED_HOSTS."""

from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from shop.consumers import ShoppingCartConsumer

SOCKET_PATH = "/ws/cart/"  # storefront pages hand it to their script (data-socket-path)

websocket_urlpatterns = [
    path(
        SOCKET_PATH.removeprefix("/"),
        AllowedHostsOriginValidator(ShoppingCartConsumer.as_asgi()),
    ),
]
