"""Shopper websocket routes. The session cookie of the handshake names the cart, so the
consumer runs behind the session/auth middleware; Origin is checked against ALLOWED_HOSTS."""

from channels.auth import AuthMiddlewareStack
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from shop.consumers import ShoppingCartConsumer

SOCKET_PATH = "/ws/cart/"  # storefront pages hand it to their script (data-socket-path)

websocket_urlpatterns = [
    path(
        SOCKET_PATH.removeprefix("/"),
        AllowedHostsOriginValidator(AuthMiddlewareStack(ShoppingCartConsumer.as_asgi())),
    ),
]
