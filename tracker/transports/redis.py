"""The Redis pub/sub transport: one broadcast channel per tracker shard, one direct
channel per replica and shard for transfers. Survives Redis restarts: the reader
reconnects and resubscribes with backoff, then tells the tracker, which repairs what was
lost meanwhile through transfers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .base import Outgoing, Receive, TransportUnavailable, cancel_and_wait

logger = logging.getLogger("tracker.redis")

_CONNECTION_ERRORS = (RedisError, OSError, asyncio.IncompleteReadError)


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (
        f":{parts.port}" if parts.port else ""
    )
    return urlunsplit(parts._replace(netloc=netloc))


class RedisTransport:
    def __init__(self, url: str, *, prefix: str, name: str, pool_size: int, replica: str) -> None:
        self.url = url
        self.description = f"redis {redacted(url)}"
        self.broadcast_channels = [f"{prefix}:{name}:{shard}" for shard in range(pool_size)]
        self.direct_channels = [f"{c}:@{replica}" for c in self.broadcast_channels]
        self._shard_of = {
            channel.encode(): shard
            for channels in (self.broadcast_channels, self.direct_channels)
            for shard, channel in enumerate(channels)
        }
        self._client: aioredis.Redis | None = None
        self._pubsub = None
        self._reader: asyncio.Task | None = None
        self.reconnects = 0

    def _new_client(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(
            self.url, socket_connect_timeout=2, socket_keepalive=True, retry_on_timeout=False
        )

    async def start(self, receive: Receive, reconnected: Callable[[], None]) -> None:
        self._client = self._new_client()
        try:
            await self._subscribe()
        except _CONNECTION_ERRORS as error:
            await self.close()
            raise TransportUnavailable(
                f"cannot reach Redis at {redacted(self.url)}: {error}"
            ) from None
        self._reader = asyncio.create_task(
            self._read(receive, reconnected), name="tracker-redis-reader"
        )

    async def _subscribe(self) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(*self.broadcast_channels, *self.direct_channels)
        except BaseException:
            await pubsub.aclose()
            raise
        self._pubsub = pubsub

    async def _read(self, receive: Receive, reconnected: Callable[[], None]) -> None:
        backoff = 0.05
        while True:
            try:
                if self._pubsub is None:
                    await self._subscribe()
                    self.reconnects += 1
                    logger.warning("reconnected to %s", redacted(self.url))
                    backoff = 0.05
                    reconnected()
                async for message in self._pubsub.listen():
                    if message["type"] == "message":
                        shard = self._shard_of.get(message["channel"])
                        if shard is not None:
                            receive(shard, message["data"])
                raise ConnectionError("subscription ended")
            except asyncio.CancelledError:
                raise
            except (*_CONNECTION_ERRORS, ConnectionError) as error:
                if self._pubsub is not None:
                    logger.warning("lost %s (%s); reconnecting", redacted(self.url), error)
                    await self._drop_pubsub()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                await pubsub.aclose()
            except _CONNECTION_ERRORS:
                pass

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        if self._client is None:
            raise TransportUnavailable("transport is closed")
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for message in messages:
                    channel = self.broadcast_channels[message.shard]
                    if message.to is not None:
                        channel = f"{channel}:@{message.to}"
                    pipe.publish(channel, message.payload)
                await pipe.execute()
        except _CONNECTION_ERRORS as error:
            raise TransportUnavailable(f"publish to {redacted(self.url)} failed: {error}") from None

    async def close(self) -> None:
        if self._reader is not None:
            await cancel_and_wait([self._reader])
            self._reader = None
        await self._drop_pubsub()
        if self._client is not None:
            client, self._client = self._client, None
            try:
                await client.aclose()
            except _CONNECTION_ERRORS:
                pass
