"""The operators' endpoints of every node: `/healthz` and `/metrics`.

Site wiring, like `asgi.py` and `urls.py`: it gathers the tracker's, the storefront's and
the dashboard's metrics into one registry of its own (not prometheus-client's global one).

- `GET /healthz`: 200 `{"status": "ok", ...}`, or 503 `{"status": "degraded", ...}` when
  this node cannot be trusted to serve: its tracker is not running (not started yet, or
  the server is shutting down), the tracker's transport does not hear its medium (reader
  down, disconnected, or silent past its stall timeout), the tracker's Redis does not
  answer a PING on the transport's own connection, a peer speaking another protocol
  version or shard count was heard within down_period, a later process of this node's
  name superseded it, or `REDIS_URL` (the channel layer) does not answer a PING on a
  connection kept for these probes. `problems` says which, in words. Peers being down does
  not degrade this node: a load balancer should keep sending it shoppers. The body beyond
  `{"status"}` goes only to clients that may read `/metrics` (see `METRICS_ALLOWED_IPS`):
  `problems`, `node` (replica id), `tracker` (`running`, `transport`, `replicas`,
  `peers_up`, `peers_down`, `health`: the transport's reader, connection, age of the last
  frame heard, reconnects, and frames rejected by reason) and `redis` (`configured`,
  `reachable`, `error`).
- `GET /metrics`: Prometheus text format (OpenMetrics if the Accept header asks for it).
  404 when `METRICS` is off, 403 for clients outside `METRICS_ALLOWED_IPS`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import weakref
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
from shop.gc_tuning import GCCollector
from shop.metrics import FANOUT_FRAMES, OPEN_SHOPPER_SOCKETS
from shop.presence import CARTS_TOPIC
from tracker import Tracker, TransportUnavailable
from tracker.metrics import TrackerCollector
from tracker.process import ShuttingDown, process_tracker, running_tracker, tracker_settings
from tracker.state import UP
from tracker.transports.redis import redacted

# A load balancer's probe times out after a few seconds; answer well within that even
# when Redis accepts connections but does not reply.
TRACKER_START_TIMEOUT = 3.0
REDIS_PING_TIMEOUT = 0.5

REGISTRY = CollectorRegistry()
REGISTRY.register(TrackerCollector(running_tracker, topics=[CARTS_TOPIC]))
for metric in (OPEN_SHOPPER_SOCKETS, OPEN_STAFF_SOCKETS, STAFF_MESSAGES_SENT, FANOUT_FRAMES):
    REGISTRY.register(metric)
# Memory and open file descriptors per node; read from /proc, which does not block.
ProcessCollector(registry=REGISTRY)
# The cyclic garbage collector: the site's policy and the pauses (shop/gc_tuning.py).
REGISTRY.register(GCCollector())


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
    (tracker, tracker_problem), redis = await asyncio.gather(_started_tracker(), _redis_health())
    problems = [tracker_problem] if tracker_problem else []
    tracker_body = _tracker_health(tracker)
    if tracker is not None:
        problems += tracker_body["health"]["problems"]
        ping = await _tracker_ping(tracker)
        if ping:
            problems.append(f"tracker Redis does not answer: {ping}")
    if redis["reachable"] is False:
        problems.append(f"Redis (REDIS_URL) does not answer: {redis['error']}")
    body: dict[str, Any] = {"status": "degraded" if problems else "ok"}
    if settings.METRICS and client_allowed(request):  # the rest names hosts and addresses
        body["problems"] = problems
        body["node"] = tracker.replica_id if tracker is not None else None
        body["tracker"] = tracker_body
        body["redis"] = redis
    return JsonResponse(body, status=503 if problems else 200)


async def _started_tracker() -> tuple[Tracker | None, str | None]:
    """This process's tracker, started now if need be; else None and why."""
    try:
        async with asyncio.timeout(TRACKER_START_TIMEOUT):
            return await process_tracker(), None
    except ShuttingDown:
        return None, "shutting down"
    except TransportUnavailable as error:
        return None, f"tracker not running: {error}"
    except TimeoutError:  # the next request tries again (the start itself goes on)
        return None, f"tracker not started within {TRACKER_START_TIMEOUT} s"


async def _tracker_ping(tracker: Tracker) -> str | None:
    """None when the tracker's own Redis connection answers a PING, else the error."""
    try:
        await tracker.ping(REDIS_PING_TIMEOUT)
    except TransportUnavailable as error:
        return str(error)
    return None


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
        "transport": tracker.transport.description if tracker.transport is not None else None,
        "replicas": replicas,
        "peers_up": peers.count(UP),
        "peers_down": len(peers) - peers.count(UP),
        "health": tracker.health(),
    }


def _configured_transport() -> str:
    """What a tracker that did not start would use, described as its transport would be."""
    name, options = tracker_settings()
    url = options.get("redis_url")
    return f"redis {redacted(url)}" if url else f"in-process bus ({name})"


# The clients of the probes of REDIS_URL, per event loop and URL, kept between requests: a
# probe reuses its connection instead of opening one per request.
_probe_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, aioredis.Redis]] = (
    weakref.WeakKeyDictionary()
)


def _probe_client(url: str) -> aioredis.Redis:
    clients = _probe_clients.setdefault(asyncio.get_running_loop(), {})
    client = clients.get(url)
    if client is None:
        client = clients[url] = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=REDIS_PING_TIMEOUT,
            socket_timeout=REDIS_PING_TIMEOUT,
            max_connections=2,
        )
    return client


async def _redis_health() -> dict[str, Any]:
    """A PING to REDIS_URL (the channel layer's Redis), bounded by REDIS_PING_TIMEOUT."""
    if not settings.REDIS_URL:
        return {"configured": False, "reachable": None}
    try:
        async with asyncio.timeout(2 * REDIS_PING_TIMEOUT):
            await _probe_client(settings.REDIS_URL).ping()
    except (RedisError, OSError, TimeoutError) as error:
        reason = f"{type(error).__name__}: {str(error) or 'no reply'}"
        return {"configured": True, "reachable": False, "error": reason}
    return {"configured": True, "reachable": True}
