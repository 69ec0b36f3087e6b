"""The contract between a tracker and the medium that carries its messages."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol


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

    async def close(self) -> None: ...
