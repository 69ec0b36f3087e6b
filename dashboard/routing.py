"""Staff websocket routes: Origin checked against ALLOWED_HOSTS, then the socket token."""

from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from .consumers import DashboardConsumer
from .middleware import StaffTokenAuthMiddleware

websocket_urlpatterns = [
    path(
        "ws/dashboard/",
        AllowedHostsOriginValidator(StaffTokenAuthMiddleware(DashboardConsumer.as_asgi())),
    ),
]
