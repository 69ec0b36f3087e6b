"""The site's Redis channel layer: channels-redis, with a connection pool that waits.

redis-py's asyncio `ConnectionPool` raises MaxConnectionsError once its connections (100
by default) are all in use. A node's sockets use the channel layer in bursts: when a few
hundred sockets close together (a load balancer dropping a node's clients, the end of a
load test), each leaves its groups with a command of its own, and every command past the
hundredth failed, leaving that socket's group memberships in Redis for a day. A
`BlockingConnectionPool` of the same size makes them queue for a connection instead.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from channels_redis.core import RedisChannelLayer

# Seconds a command may wait for a free connection before it fails after all.
POOL_WAIT = 20


class WaitingRedisChannelLayer(RedisChannelLayer):
    def create_pool(self, index: int) -> aioredis.BlockingConnectionPool:
        host: dict[str, Any] = dict(self.hosts[index])
        return aioredis.BlockingConnectionPool.from_url(
            host.pop("address"), timeout=POOL_WAIT, **host
        )
