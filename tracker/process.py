"""Django glue: one tracker replica per server process and event loop.

Each ASGI server process is one replica. Daphne has no ASGI lifespan, so the tracker starts
lazily on the process's event loop at first use (`await process_tracker()`); under daphne
a Twisted shutdown trigger stops it gracefully (peers drop our rows at once on SIGTERM),
and servers that speak lifespan get `TrackerLifespan`.

Settings: `TRACKER = {"name": "site", ...options of tracker.conf.TrackerOptions}`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import weakref
from typing import Any

from django.conf import settings

from .tracker import Tracker

logger = logging.getLogger("tracker")

DEFAULT_NAME = "site"

_trackers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Tracker] = (
    weakref.WeakKeyDictionary()
)
_hooked: weakref.WeakSet[Tracker] = weakref.WeakSet()


def tracker_settings() -> tuple[str, dict[str, Any]]:
    """(tracker name, options) from `settings.TRACKER`; None values mean "default"."""
    configured = dict(getattr(settings, "TRACKER", {}) or {})
    name = configured.pop("name", None) or DEFAULT_NAME
    return name, {k: v for k, v in configured.items() if v is not None}


async def process_tracker() -> Tracker:
    """The started tracker of this process's running event loop."""
    loop = asyncio.get_running_loop()
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


async def stop_process_tracker(graceful: bool = True) -> None:
    tracker = _trackers.pop(asyncio.get_running_loop(), None)
    if tracker is not None:
        await tracker.stop(graceful=graceful)


def _stop_with_twisted(tracker: Tracker) -> None:
    """Under daphne, say goodbye before the reactor shuts down (SIGTERM, SIGINT)."""
    module = sys.modules.get("twisted.internet.reactor")  # never install a reactor here
    if module is None or not getattr(module, "running", False):
        return
    from twisted.internet.defer import Deferred

    def before_shutdown() -> Deferred:
        logger.info("server shutting down: tracker %s says goodbye", tracker.name)
        return Deferred.fromFuture(asyncio.ensure_future(tracker.stop(graceful=True)))

    module.addSystemEventTrigger("before", "shutdown", before_shutdown)


class TrackerLifespan:
    """ASGI lifespan app: start the tracker at startup, say goodbye at shutdown."""

    async def __call__(self, scope: dict, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await process_tracker()
                except Exception as error:
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await stop_process_tracker(graceful=True)
                await send({"type": "lifespan.shutdown.complete"})
                return
