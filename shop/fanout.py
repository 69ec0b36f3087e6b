"""Node-local fan-out: what goes to every page of a node crosses Redis once per node and is
written to each of the node's sockets from here (DESIGN §5). Per-cart messages stay on the
channel layer.

Two pieces, one of each per server process (per event loop):

- `LocalFanout`, the hub: this process's sockets by topic, each held as its ASGI `send`.
  `deliver(topic, text)` writes one text frame, encoded once by the caller, to every socket
  of the topic, in call order; `join(topic, send, greeting)` writes the greeting first, so a
  socket can be handed the current state and then every change after it, in order. One slow
  socket never holds up the others: a send that does not complete at once (daphne's always
  does: it hands the frame to Twisted, which buffers it; other servers may wait for the
  client) is finished by a task of its own, and that socket's later frames queue behind it
  (at most `max_backlog`; beyond that it is closed with SLOW_SOCKET_CLOSE_CODE and the page
  reconnects). A socket that closed meanwhile is harmless: the server drops what is sent to
  it, and its consumer leaves the hub as it ends.

  Under daphne the hub skips the ASGI send: the websocket frame of a server message is the
  same bytes for every socket (no masking, no compression in daphne), so `deliver` builds
  it once and writes it straight to each TCP socket (`_DaphneSocket`), which is what
  Phoenix does. Through daphne, Twisted queues each frame and registers the socket with
  the event loop for writing, then unregisters it once written: two epoll changes, two
  event-loop callbacks and autobahn's framing per socket, ~150 µs of CPU per socket
  measured (bench/stock_push_bench.py), against ~10 µs written directly. Whatever Twisted
  still holds for a socket (a pong, a frame the kernel did not take at once) stays first:
  the frame then goes behind it through Twisted. A client that stops reading grows its
  Twisted buffer until daphne's ping timeout closes it.
- `NodeBus`: messages to every node of the cluster. `publish_to_nodes(kind, data)` (any
  thread: views, signal receivers) is one Redis PUBLISH on `NODE_CHANNEL`; every process
  subscribes to it once, on a connection of its own, and calls the handler registered for
  the kind. Without REDIS_URL (the embedded default) it calls the handlers of this process's
  buses directly, on their loops. Pub/sub delivers to whoever listens at the time, at most
  once, so the bus reconnects and resubscribes whenever its connection fails or goes silent
  (it pings every `ping_interval` and expects to hear something within `stall_timeout`),
  then calls its `on_subscribed` handlers: what was published meanwhile is lost, and they
  repair it (the stock levels are re-read: shop.broadcast).

Why Redis pub/sub and not one channel-layer message per node: a channel-layer group of node
channels would keep a crashed node's channel (and messages for it) until the group expires,
and drop a live node after `group_expiry` (a day) unless it re-joined; pub/sub reaches
exactly the nodes listening, needs no membership, and one PUBLISH costs Redis one write per
node, as the presence tracker's heartbeats do.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import struct
import weakref
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import redis
import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import RedisError

from shop.metrics import FANOUT_FRAMES

logger = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Coroutine[Any, Any, None]]  # an ASGI send

# Close code of a socket that fell `max_backlog` frames behind: the page reconnects.
SLOW_SOCKET_CLOSE_CODE = 4008
MAX_BACKLOG = 100
NODE_CHANNEL = "shop:nodes"
_CONNECTION_ERRORS = (RedisError, OSError, asyncio.IncompleteReadError, TimeoutError)


class _Rest:
    """The remainder of a coroutine that ran, outside any task, until it first yielded to
    the event loop (`yielded`): awaiting this resumes it exactly where it stopped."""

    def __init__(self, coroutine: Any, yielded: Any) -> None:
        self.coroutine, self.yielded = coroutine, yielded

    def __await__(self) -> Generator[Any, Any, None]:
        value = self.yielded
        while True:
            try:
                sent = yield value
            except BaseException as error:  # noqa: BLE001 - handed on to the coroutine
                try:
                    value = self.coroutine.throw(error)
                except StopIteration:
                    return
            else:
                try:
                    value = self.coroutine.send(sent)
                except StopIteration:
                    return


def text_frame(text: str) -> bytes:
    """The websocket frame of a whole text message from a server (RFC 6455 5.2: FIN, opcode
    1, the payload length, no mask)."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


class _DaphneSocket:
    """A daphne websocket written to directly (see the module docstring)."""

    __slots__ = ("protocol", "transport")

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.transport = protocol.transport

    @classmethod
    def of(cls, send: Send) -> _DaphneSocket | None:
        """The socket behind daphne's ASGI send for a websocket (`Server.handle_reply` bound
        to its protocol), if it is a plain TCP one without compression; else None."""
        try:
            from autobahn.websocket.protocol import WebSocketProtocol
            from daphne.server import Server
            from twisted.internet.tcp import Connection
        except ImportError:
            return None
        if not (
            isinstance(send, functools.partial)
            and getattr(send.func, "__func__", None) is Server.handle_reply
            and len(send.args) == 1
            and isinstance(send.args[0], WebSocketProtocol)
        ):
            return None
        protocol = send.args[0]
        transport = getattr(protocol, "transport", None)
        if (
            not isinstance(transport, Connection)
            or getattr(transport, "TLS", True)
            or protocol._perMessageCompress is not None
        ):
            return None
        return cls(protocol)

    def write(self, frame: bytes) -> None:
        protocol, transport = self.protocol, self.transport
        if protocol.state != protocol.STATE_OPEN or not transport.connected:
            return  # closing or closed: daphne would drop it too
        if transport.dataBuffer or transport._tempDataBuffer:
            transport.write(frame)  # behind what Twisted holds for it already
            return
        sent = transport.writeSomeData(frame)
        if isinstance(sent, Exception):
            return  # the connection is lost: Twisted finds out as it reads
        if sent < len(frame):
            transport.write(frame[sent:])


class LocalFanout:
    """This process's sockets by topic; see the module docstring."""

    def __init__(self, max_backlog: int = MAX_BACKLOG) -> None:
        self.max_backlog = max_backlog
        self._topics: dict[str, set[Send]] = {}
        # Sockets whose last send has not completed: the frames waiting behind it, and the
        # task that writes them. A socket in here is "slow".
        self._backlogs: dict[Send, deque[dict[str, Any]]] = {}
        self._writers: dict[Send, asyncio.Task[None]] = {}
        self._direct: dict[Send, _DaphneSocket] = {}  # daphne sockets, written directly
        self._joined: dict[Send, int] = {}  # how many topics each socket is in

    def join(self, topic: str, send: Send, greeting: str | None = None) -> None:
        """Add a socket to `topic`; `greeting` (a text frame) reaches it before anything
        delivered to the topic from now on."""
        if send not in self._direct and (direct := _DaphneSocket.of(send)) is not None:
            self._direct[send] = direct
        if greeting is not None:
            self._write(send, {"type": "websocket.send", "text": greeting})
        sockets = self._topics.setdefault(topic, set())
        if send not in sockets:
            sockets.add(send)
            self._joined[send] = self._joined.get(send, 0) + 1

    def leave(self, topic: str, send: Send) -> None:
        """Remove a socket from `topic` (and forget what it still had to write, once it is
        in no topic)."""
        sockets = self._topics.get(topic)
        if sockets is None or send not in sockets:
            return
        sockets.remove(send)
        if not sockets:
            del self._topics[topic]
        if self._joined[send] > 1:
            self._joined[send] -= 1
            return
        del self._joined[send]
        self._direct.pop(send, None)
        if send in self._backlogs:
            self._backlogs.pop(send)
            self._writers.pop(send).cancel()

    def count(self, topic: str) -> int:
        return len(self._topics.get(topic, ()))

    @property
    def slow(self) -> int:
        """Sockets with frames waiting behind a send that has not completed."""
        return len(self._backlogs)

    def deliver(self, topic: str, text: str) -> int:
        """Write the text frame to every socket of `topic`, now; returns how many."""
        sockets = self._topics.get(topic)
        if not sockets:
            return 0
        message = {"type": "websocket.send", "text": text}
        frame: bytes | None = None
        direct = 0
        for send in tuple(sockets):  # a send may end a test communicator's socket
            socket = self._direct.get(send)
            if socket is None:
                self._write(send, message)
                continue
            if frame is None:
                frame = text_frame(text)
            socket.write(frame)
            direct += 1
        FANOUT_FRAMES.labels("direct").inc(direct)
        FANOUT_FRAMES.labels("asgi").inc(len(sockets) - direct)
        return len(sockets)

    def send(self, send: Send, text: str) -> None:
        """Write one text frame to one socket of the hub (a consumer's own reply), in order
        with what the hub writes to it, and as the hub does: straight to a daphne socket."""
        self._write(send, {"type": "websocket.send", "text": text})

    def _write(self, send: Send, message: dict[str, Any]) -> None:
        socket = self._direct.get(send)
        if socket is not None:  # (a greeting to a daphne socket)
            socket.write(text_frame(message["text"]))
            return
        backlog = self._backlogs.get(send)
        if backlog is not None:
            if backlog and backlog[-1]["type"] == "websocket.close":
                return  # closing: it gets nothing more
            if len(backlog) >= self.max_backlog:
                backlog.clear()
                message = {"type": "websocket.close", "code": SLOW_SOCKET_CLOSE_CODE}
            backlog.append(message)
            return
        coroutine = send(message)
        try:
            yielded = coroutine.send(None)
        except StopIteration:
            return  # written (daphne: handed to Twisted's buffer)
        except Exception:  # noqa: BLE001 - the socket is going away; its consumer leaves
            logger.debug("fan-out send failed", exc_info=True)
            return
        self._backlogs[send] = deque()
        self._writers[send] = asyncio.get_running_loop().create_task(
            self._finish(send, _Rest(coroutine, yielded))
        )

    async def _finish(self, send: Send, pending: _Rest) -> None:
        """Complete a slow socket's send, then write its backlog in order."""
        try:
            await pending
            backlog = self._backlogs[send]
            while backlog:
                await send(backlog.popleft())
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - as in _write
            logger.debug("fan-out send failed", exc_info=True)
        if self._writers.get(send) is asyncio.current_task():
            del self._backlogs[send], self._writers[send]


# -- to every node ----------------------------------------------------------------------------

_local_buses: weakref.WeakSet[NodeBus] = weakref.WeakSet()
_publishers: dict[str, redis.Redis] = {}  # by URL; thread-safe (a pool of connections)


def publish_to_nodes(kind: str, data: Any) -> None:
    """Send `data` (JSON-able) to the `kind` handler of every node's bus, this one's
    included. Blocking for one Redis round trip; callable from any thread. Raises
    RedisError if Redis cannot be reached."""
    payload = json.dumps([kind, data])
    url = settings.REDIS_URL
    if url:
        publisher = _publishers.get(url)
        if publisher is None:
            publisher = _publishers[url] = redis.Redis.from_url(
                url, socket_timeout=2.0, socket_connect_timeout=2.0
            )
        publisher.publish(NODE_CHANNEL, payload)
        return
    for bus in list(_local_buses):
        if not bus.loop.is_closed():
            # In a context of its own: not the caller's (a sync_to_async thread's context
            # would make the handlers' own database calls refuse to run).
            bus.loop.call_soon_threadsafe(bus.dispatch, payload, context=contextvars.Context())


class NodeBus:
    """This process's end of `publish_to_nodes`; see the module docstring."""

    def __init__(
        self,
        redis_url: str | None,
        *,
        ping_interval: float = 1.0,
        stall_timeout: float = 5.0,
        backoff_cap: float = 2.0,
    ) -> None:
        self.redis_url = redis_url
        self.ping_interval = ping_interval
        self.stall_timeout = stall_timeout
        self.backoff_cap = backoff_cap
        self.loop = asyncio.get_running_loop()
        self.handlers: dict[str, Callable[[Any], None]] = {}
        self.subscribed_handlers: list[Callable[[], None]] = []
        self.subscribed = False
        self.subscriptions = 0  # how many times it (re)subscribed
        self._reader: asyncio.Task[None] | None = None

    def on(self, kind: str, handler: Callable[[Any], None]) -> None:
        self.handlers[kind] = handler

    def on_subscribed(self, handler: Callable[[], None]) -> None:
        """Call `handler` after every (re)subscription to Redis: messages published before
        it may not have been heard."""
        self.subscribed_handlers.append(handler)

    def start(self) -> None:
        """Start listening (Redis: in the background, retrying while Redis is away)."""
        if self.redis_url is None:
            _local_buses.add(self)
            self.subscribed = True
        else:
            self._reader = self.loop.create_task(self._read(self.redis_url), name="node-bus-reader")

    async def close(self) -> None:
        _local_buses.discard(self)
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None

    def dispatch(self, payload: bytes | str) -> None:
        try:
            kind, data = json.loads(payload)
            handler = self.handlers.get(kind)
        except (ValueError, TypeError):
            logger.warning("node bus: dropped a message that is not [kind, data]")
            return
        if handler is not None:
            handler(data)

    async def _read(self, url: str) -> None:
        backoff = 0.05
        while True:
            client = aioredis.Redis.from_url(
                url,
                socket_connect_timeout=2.0,
                socket_timeout=self.stall_timeout,
                socket_keepalive=True,
            )
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(NODE_CHANNEL)
                await self._listen(pubsub)
            except asyncio.CancelledError:
                raise
            except (*_CONNECTION_ERRORS, ConnectionError) as error:
                if self.subscribed:
                    logger.warning("node bus: lost Redis (%s); resubscribing", error)
                backoff = 0.05 if self.subscribed else min(2 * backoff, self.backoff_cap)
            finally:
                self.subscribed = False
                await asyncio.gather(pubsub.aclose(), client.aclose(), return_exceptions=True)
            await asyncio.sleep(backoff)

    async def _listen(self, pubsub: Any) -> None:
        heard = self.loop.time()
        pinged = heard
        while True:
            message = await pubsub.get_message(timeout=self.ping_interval)
            now = self.loop.time()
            if message is not None:
                heard = now
                if message["type"] == "subscribe":
                    self.subscribed = True
                    self.subscriptions += 1
                    for handler in self.subscribed_handlers:
                        handler()
                elif message["type"] == "message":
                    self.dispatch(message["data"])
            elif now - heard >= self.stall_timeout:
                raise ConnectionError(f"nothing heard for {now - heard:.1f} s")
            if now - pinged >= self.ping_interval:
                pinged = now
                await pubsub.ping()
