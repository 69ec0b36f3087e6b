"""How many shopper sockets one shopper and one client address may hold open on this server
process (settings SHOPPER_SOCKETS_PER_SESSION, SHOPPER_SOCKETS_PER_ADDRESS; 0: no limit).

Counted per process, in memory (consumers of a process share one event loop, so admitting
is one synchronous step): behind a balancer spreading sockets over N processes, a client
can hold up to N times a limit, which still bounds it. A socket over a limit is refused at
the handshake: an error `too_many_sockets`, then close code TOO_MANY_SOCKETS_CLOSE_CODE.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.conf import settings

TOO_MANY_SOCKETS_CLOSE_CODE = 4029


class SocketCounts:
    """Open sockets per key (a shopper's login state, a client address)."""

    def __init__(self) -> None:
        self.open: Counter[str] = Counter()

    def admit(self, limits: dict[str, int]) -> bool:
        """Count one more socket under every key, unless one is at its limit (0: none)."""
        if any(limit and self.open[key] >= limit for key, limit in limits.items()):
            return False
        self.open.update(limits.keys())
        return True

    def release(self, keys: Any) -> None:
        self.open.subtract(keys)
        for key in keys:
            if self.open[key] <= 0:
                del self.open[key]


COUNTS = SocketCounts()  # this process's


def limits_for(shopper_key: str, client: Any) -> dict[str, int]:
    """The keys a socket counts under, with their limits: its shopper (shop.identity's
    `Shopper.limit_key`) and its ASGI client address, if the server gave one."""
    limits = {f"shopper:{shopper_key}": settings.SHOPPER_SOCKETS_PER_SESSION}
    if client:
        limits[f"address:{client[0]}"] = settings.SHOPPER_SOCKETS_PER_ADDRESS
    return limits
