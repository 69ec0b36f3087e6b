"""ASGI entry point: HTTP through Django; each websocket endpoint under its own app's router
and middleware (shopper sockets in shop.routing, the staff socket in dashboard.routing).
This process's tracker replica starts with the server: through ASGI lifespan where the
server speaks it, and under daphne (which does not) as soon as its reactor runs."""

import os

from django.conf import settings
from django.core.asgi import get_asgi_application

from shop import preflight

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
preflight.settings_or_exit()  # a bad environment ends the server with one line
django_asgi_app = get_asgi_application()
preflight.checks_or_exit()  # daphne runs no system checks (tracker.E001...) of its own

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from dashboard.routing import websocket_urlpatterns as staff_patterns  # noqa: E402
from shop import gc_tuning, websockets  # noqa: E402
from shop.routing import websocket_urlpatterns as shopper_patterns  # noqa: E402
from tracker.process import TrackerLifespan, start_with_server  # noqa: E402


def server_started() -> None:
    """The site's start-up work, once this process's tracker replica runs."""
    gc_tuning.apply(tuning=settings.GC_TUNING, threshold=settings.GC_THRESHOLD)


websockets.apply()  # under daphne: what every websocket costs, less (shop/websockets.py)
application = ProtocolTypeRouter(
    {
        "http": gc_tuning.counting_requests(django_asgi_app),
        "websocket": URLRouter(shopper_patterns + staff_patterns),
        "lifespan": TrackerLifespan(then=server_started),
    }
)
start_with_server(then=server_started)
