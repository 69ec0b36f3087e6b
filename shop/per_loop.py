"""One object per event loop (per server process, and per test), started on first use.

The node's fan-out hub, its product feed and its staff dashboard hub each live as long as
the process's event loop and are made by a coroutine (reading the database, following the
tracker). `PerLoop(start)` runs `start()` once per loop, the first time anyone asks, and
hands every caller the same object: later callers do not await at all, concurrent ones
wait for the same start (shielded: a socket that goes away meanwhile does not cancel it),
and a start that fails is tried again by the next caller.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    def __init__(self, start: Callable[[], Awaitable[T]]) -> None:
        self._start = start
        self._started: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[T]] = (
            weakref.WeakKeyDictionary()
        )

    async def get(self) -> T:
        loop = asyncio.get_running_loop()
        starting = self._started.get(loop)
        if starting is None:
            starting = self._started[loop] = loop.create_task(self._run())
        if starting.done() and not starting.cancelled() and starting.exception() is None:
            return starting.result()
        try:
            return await asyncio.shield(starting)
        except Exception:
            if self._started.get(loop) is starting:
                del self._started[loop]  # the next caller tries again
            raise

    async def _run(self) -> T:
        return await self._start()
