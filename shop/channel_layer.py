"""The site's channel layers: channels-redis with a connection pool that waits and a lighter
receive for the sockets' own channels (a cluster), and channels' in-memory layer without its
sweep on every message (the embedded default, `LocalChannelLayer` below).

- The pool: redis-py's asyncio `ConnectionPool` raises MaxConnectionsError once its
  connections (100 by default) are all in use. A node's sockets use the channel layer in
  bursts: when a few hundred sockets close together (a load balancer dropping a node's
  clients, the end of a load test), each leaves its groups with a command of its own, and
  every command past the hundredth failed, leaving that socket's group memberships in Redis
  for a day. A `BlockingConnectionPool` of the same size makes them queue for a connection
  instead.
- The receive: every consumer waits on its own process-local channel (`specific.<process>!
  <socket>`); channels-redis keeps all of a process's in one Redis list, which one waiter
  at a time reads (BZPOPMIN) and sorts into per-channel queues. Each waiting consumer held
  an `asyncio.Queue` (four deques, ~3 KB even when empty), two tasks (one on the queue, one
  on the reading lock) and the futures of an `asyncio.wait` over them: ~5 KB per open
  socket, most of what a socket costs beyond the server's own objects. Here one reader task
  per process reads the list and hands each message to its channel's `_Inbox`: a waiting
  future and, only while messages wait for their consumer, a deque. What Redis sees is the
  same (`receive_single`, the same list, the same backup queue).
- `group_add` (every socket's connect) sends its ZADD and EXPIRE in one round trip, not two.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import redis.asyncio as aioredis
from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer
from channels_redis.core import RedisChannelLayer

# Seconds a command may wait for a free connection before it fails after all.
POOL_WAIT = 20
# Seconds between two sweeps of the in-memory layer for expired messages and memberships.
SWEEP_INTERVAL = 1.0


class _Inbox:
    """One process-local channel's messages not yet received, and its receiver's future."""

    __slots__ = ("messages", "waiter")

    def __init__(self) -> None:
        self.messages: deque[dict[str, Any]] | None = None  # made when a message must wait
        self.waiter: asyncio.Future[dict[str, Any]] | None = None


class WaitingRedisChannelLayer(RedisChannelLayer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._inboxes: dict[str, _Inbox] = {}
        self._reader: asyncio.Task[None] | None = None
        self._waiting = 0  # inboxes with a receiver waiting

    def create_pool(self, index: int) -> aioredis.BlockingConnectionPool:
        host: dict[str, Any] = dict(self.hosts[index])
        return aioredis.BlockingConnectionPool.from_url(
            host.pop("address"), timeout=POOL_WAIT, **host
        )

    async def group_add(self, group: str, channel: str) -> None:
        """channels-redis's group_add (ZADD with the time, then EXPIRE), pipelined."""
        assert self.require_valid_group_name(group), "Group name not valid"
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        group_key = self._group_key(group)
        connection = self.connection(self.consistent_hash(group))
        async with connection.pipeline(transaction=False) as pipe:
            pipe.zadd(group_key, {channel: time.time()})
            pipe.expire(group_key, self.group_expiry)
            await pipe.execute()

    async def receive(self, channel: str) -> dict[str, Any]:
        """The next message of `channel`: a process-local one from its inbox (one receiver
        per channel, as consumers do), any other as channels-redis receives it."""
        if "!" not in channel:
            return await super().receive(channel)
        assert self.require_valid_channel_name(channel)
        real_channel = self.non_local_name(channel)
        assert real_channel.endswith(self.client_prefix + "!"), "Wrong client prefix"
        inbox = self._inboxes.get(channel)
        if inbox is None:
            inbox = self._inboxes[channel] = _Inbox()
        if inbox.messages:
            return inbox.messages.popleft()
        if inbox.waiter is not None:
            raise RuntimeError(f"two receivers on channel {channel}")
        loop = asyncio.get_running_loop()
        self._start_reader(loop, real_channel)
        inbox.waiter = loop.create_future()
        self._waiting += 1
        try:
            return await inbox.waiter
        except BaseException:
            # Cancelled (the consumer is ending) or failed (Redis lost: it ends too): its
            # inbox goes (as channels-redis drops its queue), and the reader stops once
            # nobody waits.
            self._inboxes.pop(channel, None)
            if self._waiting == 1 and self._reader is not None:
                self._reader.cancel()
            raise
        finally:
            inbox.waiter = None
            self._waiting -= 1

    def _start_reader(self, loop: asyncio.AbstractEventLoop, real_channel: str) -> None:
        reader = self._reader
        if (
            reader is not None
            and not reader.done()
            and not reader.cancelling()  # stopping: its last waiter left just now
            and not reader.get_loop().is_closed()
        ):
            if reader.get_loop() is not loop:
                raise RuntimeError(
                    "Two event loops are trying to receive() on one channel layer at once!"
                )
            return
        self._reader = loop.create_task(self._read(real_channel))

    async def _read(self, real_channel: str) -> None:
        """Read this process's list and deliver each message to its channel's inbox until
        nobody waits; a failure (Redis lost) is every waiting receiver's."""
        try:
            while self._waiting:
                message_channel, message = await self.receive_single(real_channel)
                for channel in message_channel if isinstance(message_channel, list) else [
                    message_channel
                ]:
                    self._deliver(channel, message)
        except Exception as error:
            for inbox in list(self._inboxes.values()):
                if inbox.waiter is not None and not inbox.waiter.done():
                    inbox.waiter.set_exception(error)
        finally:
            if self._reader is asyncio.current_task():
                self._reader = None

    def _deliver(self, channel: str, message: dict[str, Any]) -> None:
        inbox = self._inboxes.get(channel)
        if inbox is None:
            inbox = self._inboxes[channel] = _Inbox()
        waiter = inbox.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(message)
            return
        if inbox.messages is None:
            inbox.messages = deque(maxlen=self.capacity)  # full: the oldest is dropped
        inbox.messages.append(message)

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
