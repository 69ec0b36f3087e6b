"""The in-process transport: replicas in one event loop, with optional injected faults."""

from __future__ import annotations

import asyncio
import random
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .base import Outgoing, Receive


class LocalBus:
    """A message bus between the replicas of one event loop.

    Faults for tests and simulations: `loss` and `duplicate` are probabilities per
    delivery, `delay` a (min, max) range of seconds (random delays reorder messages),
    and `partition` cuts every link between two groups of replicas until `heal`.
    Counters of messages and bytes delivered help measure a protocol's cost.
    """

    def __init__(
        self,
        *,
        loss: float = 0.0,
        duplicate: float = 0.0,
        delay: tuple[float, float] = (0.0, 0.0),
        seed: int | None = None,
    ) -> None:
        self.loss = loss
        self.duplicate = duplicate
        self.delay = delay
        self.random = random.Random(seed)
        self.members: dict[tuple[str, str], LocalTransport] = {}  # (tracker name, replica)
        self.cut: set[frozenset[str]] = set()
        self.messages = 0
        self.bytes = 0

    def partition(self, side_a: Iterable[str], side_b: Iterable[str]) -> None:
        for a in side_a:
            for b in side_b:
                self.cut.add(frozenset((a, b)))

    def heal(self) -> None:
        self.cut.clear()

    def _receivers(self, sender: LocalTransport, message: Outgoing) -> list[LocalTransport]:
        """Who the message reaches across the cut links (before loss)."""
        if message.to is None:
            receivers = [
                t
                for (name, replica), t in self.members.items()
                if name == sender.name and replica != sender.replica
            ]
        else:
            target = self.members.get((sender.name, message.to))
            receivers = [target] if target is not None else []
        return [r for r in receivers if frozenset((sender.replica, r.replica)) not in self.cut]

    def _route(self, sender: LocalTransport, message: Outgoing) -> None:
        for receiver in self._receivers(sender, message):
            if self.loss and self.random.random() < self.loss:
                continue
            copies = 2 if self.duplicate and self.random.random() < self.duplicate else 1
            for _ in range(copies):
                self.messages += 1
                self.bytes += len(message.payload)
                receiver.deliver(message.shard, message.payload, self._latency())

    def _latency(self) -> float:
        low, high = self.delay
        return low if high <= low else self.random.uniform(low, high)


_default_buses: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LocalBus] = (
    weakref.WeakKeyDictionary()
)


def default_bus() -> LocalBus:
    """The fault-free bus of the running event loop (the embedded single-node default)."""
    loop = asyncio.get_running_loop()
    bus = _default_buses.get(loop)
    if bus is None:
        bus = _default_buses[loop] = LocalBus()
    return bus


class LocalTransport:
    def __init__(self, bus: LocalBus, name: str, replica: str) -> None:
        self.bus = bus
        self.name = name
        self.replica = replica
        self.description = f"in-process bus ({name})"
        self._receive: Receive | None = None

    async def start(self, receive: Receive, reconnected: Callable[[], None]) -> None:
        self._receive = receive
        self.bus.members[(self.name, self.replica)] = self

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        for message in messages:
            self.bus._route(self, message)

    async def ping(self) -> None:
        """Always answered: the bus is this process's memory."""

    def health(self) -> dict[str, Any]:
        return {"problem": None, "connected": self._receive is not None}

    def deliver(self, shard: int, payload: bytes, latency: float) -> None:
        loop = asyncio.get_running_loop()
        if latency > 0:
            loop.call_later(latency, self._arrive, shard, payload)
        else:
            loop.call_soon(self._arrive, shard, payload)

    def _arrive(self, shard: int, payload: bytes) -> None:
        if self._receive is not None:  # a closed replica hears nothing more
            self._receive(shard, payload)

    async def close(self) -> None:
        self._receive = None
        if self.bus.members.get((self.name, self.replica)) is self:
            del self.bus.members[(self.name, self.replica)]
