"""The Redis pub/sub transport: one broadcast channel per tracker shard, one direct
channel per replica and shard for transfers.

It survives Redis restarts and connections that die without a word. The reader reconnects
and resubscribes with backoff whenever its connection fails, and also when it has heard
nothing for `stall_timeout` seconds: a replica hears its own heartbeats (Redis delivers a
publisher's messages to its own subscription too, and a replica sends one at least every
silent interval), so silence on the subscription means a connection that a NAT or a
firewall dropped without a reset. After a reconnect it tells the tracker, which repairs
what was lost meanwhile through transfers. Every command has a timeout, so a publish
cannot hang on a dead connection either.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .base import Outgoing, Receive, TransportUnavailable, cancel_and_wait

logger = logging.getLogger("tracker.redis")

_CONNECTION_ERRORS = (RedisError, OSError, asyncio.IncompleteReadError, TimeoutError)
_BACKOFF_FIRST = 0.05
START_TIMEOUT = 5.0  # joining at start-up may take longer than a command on a live link


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (
        f":{parts.port}" if parts.port else ""
    )
    return urlunsplit(parts._replace(netloc=netloc))


class _Stalled(ConnectionError):
    """The subscription heard nothing for too long: the connection is presumed dead."""


class RedisTransport:
    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        name: str,
        pool_size: int,
        replica: str,
        stall_timeout: float = 3.0,
        command_timeout: float = 2.0,
    ) -> None:
        """`stall_timeout`: silence on the subscription after which it is replaced;
        `command_timeout`: what a command may take, and the longest backoff between
        reconnection attempts."""
        self.url = url
        self.description = f"redis {redacted(url)}"
        self.stall_timeout = stall_timeout
        self.command_timeout = command_timeout
        self.broadcast_channels = [f"{prefix}:{name}:{shard}" for shard in range(pool_size)]
        self.direct_channels = [f"{c}:@{replica}" for c in self.broadcast_channels]
        self._shard_of = {
            channel.encode(): shard
            for channels in (self.broadcast_channels, self.direct_channels)
            for shard, channel in enumerate(channels)
        }
        self._client: aioredis.Redis | None = None
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self.reconnects = 0
        self.stalls = 0  # reconnects because the subscription went silent
        self.reader_failures = 0  # unexpected errors in the reader (bugs), each logged
        self._last_frame: float | None = None  # loop time of the last frame heard
        self._lost_since: float | None = None  # loop time the subscription was lost

    def _new_client(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(
            self.url,
            socket_connect_timeout=max(1.0, self.command_timeout),
            socket_timeout=self.command_timeout,
            socket_keepalive=True,
            retry_on_timeout=False,
        )

    async def start(self, receive: Receive, reconnected: Callable[[], None]) -> None:
        self._client = self._new_client()
        try:
            await self._subscribe(START_TIMEOUT)
        except _CONNECTION_ERRORS as error:
            await self.close()
            raise TransportUnavailable(
                f"cannot reach Redis at {redacted(self.url)}: {error}"
            ) from None
        self._reader = asyncio.create_task(
            self._read(receive, reconnected), name="tracker-redis-reader"
        )

    async def _subscribe(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        assert self._client is not None
        pubsub: Any = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            async with asyncio.timeout(timeout or self.command_timeout):
                await pubsub.subscribe(*self.broadcast_channels, *self.direct_channels)
        except BaseException:
            await _quietly(pubsub.aclose())
            raise
        self._pubsub = pubsub
        self._last_frame = asyncio.get_running_loop().time()
        self._lost_since = None

    async def _read(self, receive: Receive, reconnected: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        backoff = _BACKOFF_FIRST
        while True:
            try:
                if self._pubsub is None:
                    await self._subscribe()
                    self.reconnects += 1
                    logger.warning("reconnected to %s", redacted(self.url))
                    backoff = _BACKOFF_FIRST
                    reconnected()
                await self._listen(receive, loop)
            except asyncio.CancelledError:
                raise
            except (*_CONNECTION_ERRORS, ConnectionError) as error:
                self._lost(f"lost {redacted(self.url)} ({error or type(error).__name__})", loop)
            except Exception:
                # Not a connection problem: a bug. Say so, and keep the replica listening.
                self.reader_failures += 1
                logger.exception("tracker reader failed; reconnecting")
                self._lost(None, loop)
            await self._drop_pubsub()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.command_timeout)

    async def _listen(self, receive: Receive, loop: asyncio.AbstractEventLoop) -> None:
        pubsub = self._pubsub
        last_frame = loop.time() if self._last_frame is None else self._last_frame
        while True:
            message = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=self.stall_timeout / 4
            )
            now = loop.time()
            if message is None:
                if now - last_frame >= self.stall_timeout:
                    self.stalls += 1
                    raise _Stalled(f"nothing heard for {now - last_frame:.1f} s")
                continue
            self._last_frame = last_frame = now
            if message["type"] == "message":
                shard = self._shard_of.get(message["channel"])
                if shard is not None:
                    receive(shard, message["data"])

    def _lost(self, reason: str | None, loop: asyncio.AbstractEventLoop) -> None:
        if self._lost_since is None:
            self._lost_since = loop.time()
            if reason is not None:
                logger.warning("%s; reconnecting", reason)

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            await _quietly(pubsub.aclose())

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
            raise TransportUnavailable(
                f"publish to {redacted(self.url)} failed: {error or type(error).__name__}"
            ) from None

    async def ping(self) -> None:
        """A PING on the transport's own connection pool (kept, not made per call)."""
        if self._client is None:
            raise TransportUnavailable("transport is closed")
        try:
            await self._client.ping()
        except _CONNECTION_ERRORS as error:
            raise TransportUnavailable(f"{type(error).__name__}: {error}") from None

    def health(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        now = loop.time()
        reader_alive = self._reader is not None and not self._reader.done()
        age = None if self._last_frame is None else round(now - self._last_frame, 3)
        problem = None
        if not reader_alive:
            problem = "tracker transport reader not running"
        elif self._pubsub is None:
            lost = 0.0 if self._lost_since is None else now - self._lost_since
            problem = f"tracker transport not connected (reconnecting for {lost:.1f} s)"
        elif age is not None and age >= self.stall_timeout:
            problem = f"tracker transport heard nothing for {age:.1f} s"
        return {
            "problem": problem,
            "reader_alive": reader_alive,
            "connected": self._pubsub is not None,
            "last_frame_age": age,
            "reconnects": self.reconnects,
            "stalls": self.stalls,
            "reader_failures": self.reader_failures,
        }

    async def close(self) -> None:
        if self._reader is not None:
            await cancel_and_wait([self._reader])
            self._reader = None
        await self._drop_pubsub()
        if self._client is not None:
            client, self._client = self._client, None
            await _quietly(client.aclose())


async def _quietly(closing: Any) -> None:
    try:
        await closing
    except (*_CONNECTION_ERRORS, RuntimeError):
        pass
