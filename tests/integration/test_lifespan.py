"""Servers that speak ASGI lifespan start the tracker at startup, then run the site's start-up
hook, and stop the tracker at shutdown."""

import asyncio
import gc

from shop.asgi import application
from shop.gc_tuning import COLLECTOR
from tracker.process import running_tracker


async def test_lifespan_starts_and_gracefully_stops_the_process_tracker(settings):
    # The site's hook runs in this (test) process: its GC policy would freeze pytest's heap.
    settings.GC_TUNING = False
    inbox: asyncio.Queue = asyncio.Queue()
    outbox: asyncio.Queue = asyncio.Queue()
    server = asyncio.create_task(
        application({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, outbox.put)
    )
    assert running_tracker() is None
    await inbox.put({"type": "lifespan.startup"})
    assert await outbox.get() == {"type": "lifespan.startup.complete"}
    tracker = running_tracker()
    assert tracker is not None and tracker.running
    assert COLLECTOR.on_gc in gc.callbacks  # the site's start-up hook ran (shop/gc_tuning.py)

    await inbox.put({"type": "lifespan.shutdown"})
    assert await outbox.get() == {"type": "lifespan.shutdown.complete"}
    await server
    assert not tracker.running and tracker.stopped
    assert running_tracker() is None
