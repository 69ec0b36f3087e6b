"""Servers that speak ASGI lifespan start the tracker at startup and stop it at shutdown."""

import asyncio

from shop.asgi import application
from tracker.process import running_tracker


async def test_lifespan_starts_and_gracefully_stops_the_process_tracker():
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

    await inbox.put({"type": "lifespan.shutdown"})
    assert await outbox.get() == {"type": "lifespan.shutdown.complete"}
    await server
    assert not tracker.running and tracker.stopped
    assert running_tracker() is None
