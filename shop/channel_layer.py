"""The site's channel layers: channels-redis with a connection pool that waits (a cluster),
and channels' in-memory layer without its sweep on every message (the embedded default).
"""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis
from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer
from channels_redis.core import RedisChannelLayer

# Seconds a command may wait for a free connection before it fails after all.
POOL_WAIT = 20
# Seconds between two sweeps of the in-memory layer for expired messages and memberships.
SWEEP_INTERVAL = 1.0


class WaitingRedisChannelLayer(RedisChannelLayer):
    """redis-py's asyncio `ConnectionPool` raises MaxConnectionsError once its connections (100
    by default) are all in use. A node's sockets use the channel layer in bursts: when a few
    hundred sockets close together (a load balancer dropping a node's clients, the end of a
    load test), each leaves its groups with a command of its own, and every command past the
    hundredth failed, leaving that socket's group memberships in Redis for a day. A
    `BlockingConnectionPool` of the same size makes them queue for a connection instead.
    """

    def create_pool(self, index: int) -> aioredis.BlockingConnectionPool:
        host: dict[str, Any] = dict(self.hosts[index])
        return aioredis.BlockingConnectionPool.from_url(
            host.pop("address"), timeout=POOL_WAIT, **host
        )


class LocalChannelLayer(InMemoryChannelLayer):
    """channels' in-memory layer, for one process without Redis, minus two costs of every
    message.

    InMemoryChannelLayer sweeps every channel's queue and every group membership for
    expired ones on each `receive` and `group_send`: work in proportion to the process's
    sockets, twice per cart action (the change's group send, and the receive of each
    socket's next message), about a fifth of the event loop's time per cart action with
    200 sockets open (bench/README.md, issue 12). Here the sweep runs at most once per
    `sweep_interval` seconds, so a message or a membership outlives its expiry by at most
    that much. And its `group_send` makes one task per member and waits for them all, where
    each send is a `put_nowait`: here it sends to each member in turn.
    """

    def __init__(self, *args: Any, sweep_interval: float = SWEEP_INTERVAL, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sweep_interval = sweep_interval
        self._next_sweep = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.sweep_interval
        super()._clean_expired()

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        for channel in list(self.groups.get(group, ())):
            try:
                await self.send(channel, message)
            except ChannelFull:
                pass  # (as InMemoryChannelLayer: a full channel misses group messages)
