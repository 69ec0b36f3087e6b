"""The contract between a tracker and the medium that carries its messages."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, Protocol


class TransportUnavailable(ConnectionError):
    """The transport cannot reach its medium (for example, Redis is down)."""


class Outgoing(NamedTuple):
    shard: int
    to: str | None  # a replica id for a direct message, None to broadcast to the shard
    payload: bytes


Receive = Callable[[int, bytes], None]  # (shard, payload); called on the event loop


class Transport(Protocol):
    """Delivers a replica's messages to the other replicas of the same tracker name.

    Broadcasts of one sender arrive in the order sent, or not at all (the tracker repairs
    losses by transfers); a sender never receives its own messages.
    """

    description: str

    async def start(self, receive: Receive, reconnected: Callable[[], None]) -> None:
        """Subscribe; raise TransportUnavailable when the medium cannot be reached.
        `reconnected` is called after the medium was lost and found again."""

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Send in order; raise TransportUnavailable if they could not be handed over."""

    async def ping(self) -> None:
        """A round trip to the medium; raise TransportUnavailable if it does not answer."""

    def health(self) -> dict[str, Any]:
        """`{"problem": str | None, ...details}`: None while the transport hears its medium."""

    async def close(self) -> None: ...


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], every: float = 0.1) -> None:
    """Cancel `tasks` and wait until each has ended, cancelling again while one runs on.

    A cancellation can be lost inside a client library: on Python 3.11 `asyncio.wait_for`,
    which redis-py puts around every socket write, returns the inner result and drops the
    cancellation when both land in the same loop iteration (bpo-42130), and a loop around
    it then carries on as if nothing had happened. One cancel() and a wait would then
    wait for ever.
    """
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=every)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved, as gather(return_exceptions=True) did
