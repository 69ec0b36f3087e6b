"""Django glue: one tracker replica per server process and event loop.

Each ASGI server process is one replica, started when the server starts: servers that
speak ASGI lifespan get `TrackerLifespan`; daphne has no lifespan, so the site's ASGI module
calls `start_with_server()`, which starts the replica as soon as daphne's reactor runs
(retrying while Redis cannot be reached), and a Twisted shutdown trigger stops it
gracefully (peers drop our rows at once on SIGTERM). `await process_tracker()` returns
the started tracker (starting it if need be); once the server is shutting down it raises
`ShuttingDown`, which requests and sockets answer with a clean 503 or close.

Settings: `TRACKER = {"name": "site", ...options of tracker.conf.TrackerOptions}`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

from .tracker import Tracker
from .transports import TransportUnavailable

logger = logging.getLogger("tracker")

DEFAULT_NAME = "site"
# While Redis cannot be reached at start-up, try again after this long, doubling up to
# START_RETRY_CAP seconds.
START_RETRY_FIRST, START_RETRY_CAP = 0.5, 10.0

_trackers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Tracker] = (
    weakref.WeakKeyDictionary()
)
_hooked: weakref.WeakSet[Tracker] = weakref.WeakSet()
_shutting_down: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


class ShuttingDown(RuntimeError):
    """This server process is shutting down: its replica has said goodbye. A request should
    get a 503, a socket a close, so that the client retries on another node."""


def tracker_settings() -> tuple[str, dict[str, Any]]:
    """(tracker name, options) from `settings.TRACKER`; None values mean "default"."""
    configured = dict(getattr(settings, "TRACKER", {}) or {})
    name = configured.pop("name", None) or DEFAULT_NAME
    return name, {k: v for k, v in configured.items() if v is not None}


async def process_tracker() -> Tracker:
    """The started tracker of this process's running event loop. Raises ShuttingDown once
    the server is shutting down, TransportUnavailable when Redis cannot be reached."""
    loop = asyncio.get_running_loop()
    if loop in _shutting_down:
        raise ShuttingDown("this server process is shutting down")
    tracker = _trackers.get(loop)
    if tracker is None:
        name, options = tracker_settings()
        tracker = _trackers[loop] = Tracker(name, **options)
    if not tracker.running:
        await tracker.start()
        if tracker not in _hooked:
            _hooked.add(tracker)
            _stop_with_twisted(tracker)
    return tracker


def running_tracker() -> Tracker | None:
    """The tracker of the running loop if it has been started, without starting one."""
    try:
        tracker = _trackers.get(asyncio.get_running_loop())
    except RuntimeError:
        return None
    return tracker if tracker is not None and tracker.running else None


async def stop_process_tracker(graceful: bool = True, *, shutdown: bool = False) -> None:
    """Stop this loop's tracker. `shutdown`: the server is going away, and from now on
    `process_tracker()` raises ShuttingDown instead of starting a new replica."""
    loop = asyncio.get_running_loop()
    if shutdown:
        _shutting_down.add(loop)
    tracker = _trackers.pop(loop, None)
    if tracker is not None:
        await tracker.stop(graceful=graceful)


def start_with_server(then: Callable[[], None] | None = None) -> None:
    """Under daphne (a Twisted reactor is installed), start this process's replica as soon
    as the server runs, without waiting for a first request, then call `then` (the site's
    start-up work). Elsewhere this does nothing: ASGI lifespan or first use starts it."""
    module = sys.modules.get("twisted.internet.reactor")  # never install a reactor here
    if module is None:
        return
    module.callWhenRunning(lambda: asyncio.ensure_future(_start_at_boot(then)))


async def _start_at_boot(then: Callable[[], None] | None) -> None:
    delay = START_RETRY_FIRST
    while True:
        try:
            await process_tracker()
            break
        except ShuttingDown:
            return
        except TransportUnavailable as error:
            logger.warning("tracker not started yet (%s); retrying in %.1f s", error, delay)
            await asyncio.sleep(delay)
            delay = min(2 * delay, START_RETRY_CAP)
    if then is not None:
        then()


def _stop_with_twisted(tracker: Tracker) -> None:
    """Under daphne, say goodbye before the reactor shuts down (SIGTERM, SIGINT)."""
    module = sys.modules.get("twisted.internet.reactor")  # never install a reactor here
    if module is None or not getattr(module, "running", False):
        return
    from twisted.internet.defer import Deferred

    def before_shutdown() -> Deferred[None]:
        logger.info("server shutting down: tracker %s says goodbye", tracker.name)
        stopping = stop_process_tracker(graceful=True, shutdown=True)
        return Deferred.fromFuture(asyncio.ensure_future(stopping))

    module.addSystemEventTrigger("before", "shutdown", before_shutdown)


class TrackerLifespan:
    """ASGI lifespan app: start the tracker at startup, then call `then` (the site's
    start-up work, as `start_with_server` does), say goodbye at shutdown."""

    def __init__(self, then: Callable[[], None] | None = None) -> None:
        self.then = then

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await process_tracker()
                    if self.then is not None:
                        self.then()
                except Exception as error:
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await stop_process_tracker(graceful=True, shutdown=True)
                await send({"type": "lifespan.shutdown.complete"})
                return
