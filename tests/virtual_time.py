"""An asyncio event loop on virtual time, for deterministic runtime tests.

`loop.time()` is a counter that moves only when the loop would otherwise wait for its next
timer (it jumps there at once) or when a test calls `jump()` (a frozen process or a
collector pause: time passes with no loop iteration in between). Everything the runtime
schedules with `call_later` or `asyncio.sleep` therefore runs in the order and at the
(virtual) times real time would give it, without waiting, and the same inputs give the
same schedule. Only in-process I/O is possible: a real socket would wait in real time.
"""

from __future__ import annotations

import asyncio
import math
import selectors
from typing import Any


class _VirtualSelector(selectors.DefaultSelector):
    """Polls without blocking; a wait for the next timer advances the virtual clock, in
    whole milliseconds as epoll waits (so timers due within the same millisecond run in
    the same loop iteration, as they do on a real loop)."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        events = super().select(0)  # the loop's self-pipe: call_soon_threadsafe wake-ups
        if not events:
            if timeout is None:  # nothing scheduled at all: a real loop would hang
                raise RuntimeError("virtual time: the loop waits for nothing")
            self._loop.jump(math.ceil(timeout * 1000) / 1000)
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        super().__init__(_VirtualSelector(self))

    def time(self) -> float:
        return self._now

    def jump(self, seconds: float) -> None:
        """Let `seconds` pass at once, as for a process that was stopped that long."""
        if seconds < 0:
            raise ValueError("time does not run backwards")
        self._now += seconds

    def run_for(self, seconds: float) -> None:
        """Run every callback and timer due within the next `seconds` of virtual time."""
        self.run_until_complete(asyncio.sleep(seconds))

    def settle(self, iterations: int = 5) -> None:
        """Run the callbacks that are ready now (and those they schedule at once), without
        letting virtual time pass."""
        for _ in range(iterations):
            self.run_until_complete(_one_iteration())


async def _one_iteration() -> None:
    await asyncio.sleep(0)
