"""The operators' endpoints of every node: `/healthz` and `/metrics`.

Site wiring, like `asgi.py` and `urls.py`: it gathers the tracker's, the storefront's and
the dashboard's metrics into one registry of its own (not prometheus-client's global one).

- `GET /healthz`: 200 `{"status": "ok", "node": replica id, "tracker": {"running",
  "transport", "replicas": {id: "up" | "down"}, "peers_up", "peers_down"}, "redis":
  {"configured", "reachable": bool | null, "error"?}}`; 503 with `"status": "degraded"`
  when the tracker is not running or Redis is configured but does not answer a PING.
  Peers being down does not degrade this node: a load balancer should keep sending it
  shoppers. The first request starts the tracker (daphne has no lifespan events), so a
  fresh node reports its real state. Everyone gets the status code; only clients that may
  read `/metrics` get more of the body than `{"status"}` (see `METRICS_ALLOWED_IPS`).
- `GET /metrics`: Prometheus text format (OpenMetrics if the Accept header asks for it).
  404 when `METRICS` is off, 403 for clients outside `METRICS_ALLOWED_IPS`.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder
from redis.exceptions import RedisError

from dashboard.metrics import OPEN_STAFF_SOCKETS, STAFF_MESSAGES_SENT
from shop.metrics import OPEN_SHOPPER_SOCKETS
from shop.presence import CARTS_TOPIC
from tracker import Tracker, TransportUnavailable
from tracker.metrics import TrackerCollector
from tracker.process import process_tracker, running_tracker, tracker_settings
from tracker.state import UP
from tracker.transports.redis import redacted

# A load balancer's probe times out after a few seconds; answer well within that even
# when Redis accepts connections but does not reply.
TRACKER_START_TIMEOUT = 3.0
REDIS_PING_TIMEOUT = 0.5

REGISTRY = CollectorRegistry()
REGISTRY.register(TrackerCollector(running_tracker, topics=[CARTS_TOPIC]))
for metric in (OPEN_SHOPPER_SOCKETS, OPEN_STAFF_SOCKETS, STAFF_MESSAGES_SENT):
    REGISTRY.register(metric)
# Memory and open file descriptors per node; read from /proc, which does not block.
ProcessCollector(registry=REGISTRY)


def client_allowed(request: HttpRequest) -> bool:
    """Whether the client address (the ASGI scope's, never a forwarded header) is listed
    in METRICS_ALLOWED_IPS."""
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack listener reports IPv4 clients so
    return any(address in ipaddress.ip_network(network) for network in settings.METRICS_ALLOWED_IPS)


@require_safe
async def metrics(request: HttpRequest) -> HttpResponse:
    if not settings.METRICS:
        raise Http404("metrics are off")
    if not client_allowed(request):
        return HttpResponseForbidden("metrics are not served to this address")
    # The format the scraper asks for: OpenMetrics for Prometheus, else text 0.0.4.
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encode(REGISTRY), content_type=content_type)


@never_cache
@require_safe
async def healthz(request: HttpRequest) -> JsonResponse:
    tracker, redis = await asyncio.gather(_started_tracker(), _redis_health())
    healthy = tracker is not None and redis["reachable"] is not False
    body: dict[str, Any] = {"status": "ok" if healthy else "degraded"}
    if settings.METRICS and client_allowed(request):  # the rest names hosts and addresses
        body["node"] = tracker.replica_id if tracker is not None else None
        body["tracker"] = _tracker_health(tracker)
        body["redis"] = redis
    return JsonResponse(body, status=200 if healthy else 503)


async def _started_tracker() -> Tracker | None:
    """This process's tracker, started now if need be; None if it cannot start."""
    try:
        async with asyncio.timeout(TRACKER_START_TIMEOUT):
            return await process_tracker()
    except (TransportUnavailable, TimeoutError):
        return None  # the next request tries again (the start itself is not cancelled)


def _tracker_health(tracker: Tracker | None) -> dict[str, Any]:
    if tracker is None:
        return {
            "running": False,
            "transport": _configured_transport(),
            "replicas": {},
            "peers_up": 0,
            "peers_down": 0,
        }
    replicas = tracker.replicas()
    peers = [status for replica, status in replicas.items() if replica != tracker.replica_id]
    return {
        "running": True,
        "transport": tracker.transport.description,
        "replicas": replicas,
        "peers_up": peers.count(UP),
        "peers_down": len(peers) - peers.count(UP),
    }


def _configured_transport() -> str:
    """What a tracker that did not start would use, described as its transport would be."""
    name, options = tracker_settings()
    url = options.get("redis_url")
    return f"redis {redacted(url)}" if url else f"in-process bus ({name})"


async def _redis_health() -> dict[str, Any]:
    """A PING to REDIS_URL on a connection of its own, so a busy pool cannot hide a dead
    server and a dead server cannot hold the answer up."""
    if not settings.REDIS_URL:
        return {"configured": False, "reachable": None}
    client = aioredis.Redis.from_url(
        settings.REDIS_URL,
        socket_connect_timeout=REDIS_PING_TIMEOUT,
        socket_timeout=REDIS_PING_TIMEOUT,
    )
    try:
        async with asyncio.timeout(2 * REDIS_PING_TIMEOUT):
            await client.ping()
    except (RedisError, OSError, TimeoutError) as error:
        reason = f"{type(error).__name__}: {str(error) or 'no reply'}"
        return {"configured": True, "reachable": False, "error": reason}
    finally:
        await client.aclose()
    return {"configured": True, "reachable": True}
