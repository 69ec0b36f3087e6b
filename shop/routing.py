"""Shopper websocket routes. The session cookie of the handshake names the cart, so the
consumer runs behind the session/auth middleware; Origin is checked against ALLOWED_HOSTS."""

from channels.auth import AuthMiddlewareStack
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from shop.consumers import ShoppingCartConsumer

websocket_urlpatterns = [
    path(
        "ws/cart/",
        AllowedHostsOriginValidator(AuthMiddlewareStack(ShoppingCartConsumer.as_asgi())),
    ),
]
