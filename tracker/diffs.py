"""Visible changes on their way to subscribers: buffered, netted, dispatched.

A replica reports every visible change the moment it happens (`DiffBuffer.add`, in the
order they happen); once per loop iteration the buffer is taken and handed to every
subscriber as one diff `{topic: (joins, leaves)}`.

The invariant subscribers rely on: replaying every diff received, from empty, gives the
replica's visible rows after each dispatch, whatever happened in between (a peer found down
and back up, a row hidden, shown and removed, all before one dispatch).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

from .deltas import Presence

logger = logging.getLogger("tracker")

Diff = dict[str, tuple[list[Presence], list[Presence]]]
Callback = Callable[[Diff], None] | Callable[[Diff], Awaitable[None]]


class DiffBuffer:
    """Visible changes since the last take, netted per row.

    Each row's visibility can only alternate (a visible row leaves, an invisible one
    joins), so its net change since the last take is +1 (it joined), -1 (it left) or 0
    (it is as it was, and goes in neither list). Counting, rather than cancelling a join
    against any earlier leave, keeps this true whatever order the changes come in, as long
    as `add` is called in the order they happened.
    """

    __slots__ = ("_net",)

    def __init__(self) -> None:
        self._net: dict[Presence, int] = {}

    def __bool__(self) -> bool:
        return bool(self._net)

    def add(self, joins: list[Presence], leaves: list[Presence]) -> None:
        """Record one change; its joins and leaves must be disjoint (a row that both left
        and joined is two changes, added in their order)."""
        net = self._net
        for row in leaves:
            count = net.get(row, 0) - 1
            if count:
                net[row] = count
            else:
                del net[row]
        for row in joins:
            count = net.get(row, 0) + 1
            if count:
                net[row] = count
            else:
                del net[row]

    def take(self) -> Diff:
        diff: Diff = {}
        for row, count in self._net.items():
            changes = diff.get(row.topic)
            if changes is None:
                changes = diff[row.topic] = ([], [])
            changes[0 if count > 0 else 1].append(row)
        self._net = {}
        return diff


class Subscriber:
    """One subscriber's callback. A plain function is called at each dispatch (and must
    return quickly); a coroutine function runs in a task of its own, fed by a queue, so a
    slow one delays only itself. Failures are logged, never propagated."""

    def __init__(self, callback: Callback) -> None:
        self.callback = callback
        self.queue: asyncio.Queue[Diff] | None = None
        self.task: asyncio.Task[None] | None = None
        if inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(
            getattr(callback, "__call__", None)  # noqa: B004 - an object with async __call__
        ):
            self.queue = asyncio.Queue()
            self.task = asyncio.create_task(self._drain(), name="tracker-subscriber")

    def deliver(self, diff: Diff) -> None:
        if self.queue is not None:
            self.queue.put_nowait(diff)
            return
        try:
            self.callback(diff)
        except Exception:
            logger.exception("tracker subscriber %r failed", self.callback)

    async def _drain(self) -> None:
        assert self.queue is not None
        while True:
            diff = await self.queue.get()
            try:
                await self.callback(diff)  # type: ignore[misc]
            except Exception:
                logger.exception("tracker subscriber %r failed", self.callback)

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
