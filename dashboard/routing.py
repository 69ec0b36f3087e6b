"""Staff websocket routes: Origin checked against ALLOWED_HOSTS, then the socket token and
the session it was issued in."""

from channels.security.websocket import AllowedHostsOriginValidator
from channels.sessions import SessionMiddlewareStack
from django.urls import path

from .consumers import DashboardConsumer
from .middleware import StaffTokenAuthMiddleware

SOCKET_PATH = "/ws/dashboard/"  # the dashboard page hands it to its script (data-socket-path)

websocket_urlpatterns = [
    path(
        SOCKET_PATH.removeprefix("/"),
        AllowedHostsOriginValidator(
            SessionMiddlewareStack(StaffTokenAuthMiddleware(DashboardConsumer.as_asgi()))
        ),
    ),
]
