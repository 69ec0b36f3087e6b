"""What a simulation measured (`Summary`) and what it held when it stopped (`Truth`)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Truth:
    """The carts and sockets the simulator holds open: what the staff view must show.

    carts: cart id -> {item id: quantity}, as the server last confirmed it to the shopper.
    pages: cart id -> the page path of each open socket of that cart.
    """

    carts: dict[str, dict[int, int]]
    pages: dict[str, list[str]]

    def stats(self) -> dict[str, Any]:
        """The staff aggregates of docs/protocol.md that this truth implies (JSON keys are str)."""
        items: Counter[str] = Counter()
        for quantities in self.carts.values():
            items.update({str(item_id): q for item_id, q in quantities.items() if q > 0})
        paths = Counter(page for pages in self.pages.values() for page in pages)
        return {
            "shoppers": len(self.carts),
            "pages": sum(paths.values()),
            "items": dict(items),
            "pages_by_path": dict(paths),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "carts": {
                cart: {str(item): q for item, q in quantities.items()}
                for cart, quantities in self.carts.items()
            },
            "pages": self.pages,
            "stats": self.stats(),
        }


@dataclass(frozen=True)
class Latency:
    """Action -> reply latency in milliseconds (nearest-rank percentiles)."""

    count: int
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, seconds: list[float]) -> Latency:
        ordered = sorted(seconds)

        def rank(p: float) -> float | None:
            if not ordered:
                return None
            return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1000

        return cls(len(ordered), rank(50), rank(90), rank(99), rank(100))


@dataclass
class Counters:
    """Running totals, updated by the simulation as things happen."""

    shoppers_arrived: int = 0
    shoppers_departed: int = 0
    shoppers_dropped: int = 0
    connections_opened: int = 0
    connections_closed: int = 0
    connections_dropped: int = 0
    connection_failures: Counter[str] = field(default_factory=Counter)
    actions_sent: int = 0
    replies_ok: int = 0
    replies_error: Counter[str] = field(default_factory=Counter)
    reply_timeouts: int = 0
    replies_lost: int = 0
    cart_mismatches: int = 0
    stock_messages: int = 0
    latencies: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Summary:
    """The outcome of a run.

    Connections: opened = closed (by the simulator) + dropped (by the server or network)
    once the run is over. Actions: sent = ok + errors + timeouts + lost (the socket closed
    before the reply). `cart_mismatches` counts ok replies whose cart was not the one the
    action should have produced. `truth` is the population held when the run stopped
    acting (the hold point).
    """

    duration: float
    shoppers_arrived: int
    shoppers_departed: int
    shoppers_dropped: int
    connections_opened: int
    connections_closed: int
    connections_dropped: int
    connection_failures: dict[str, int]
    actions_sent: int
    replies_ok: int
    replies_error: dict[str, int]
    reply_timeouts: int
    replies_lost: int
    cart_mismatches: int
    stock_messages: int
    latency: Latency
    truth: Truth

    @classmethod
    def of(cls, counters: Counters, duration: float, truth: Truth) -> Summary:
        values = asdict(counters)
        del values["latencies"]
        values["connection_failures"] = dict(counters.connection_failures)
        values["replies_error"] = dict(counters.replies_error)
        return cls(duration=duration, latency=Latency.of(counters.latencies), truth=truth, **values)

    @property
    def failures(self) -> int:
        return sum(self.connection_failures.values())

    @property
    def errors(self) -> int:
        return sum(self.replies_error.values())

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["truth"] = self.truth.to_json()
        return data
