"""A TCP proxy in front of a server, for partitions that tests can start and heal.

    proxy = TcpProxy(redis.port).start()     # 127.0.0.1:<proxy.port> -> 127.0.0.1:<port>
    node = DaphneServer(..., env={"TRACKER_REDIS_URL": proxy.url})
    proxy.cut("reset")   # every connection through it is dropped, new ones are refused
    proxy.cut("stall")   # connections stay open, nothing flows either way until healed
    proxy.cut("blackhole")  # as stall, but bytes are lost, and so are the connections
    proxy.drop_silently()   # the open connections go dead without a word; new ones work
    proxy.heal()         # traffic flows again (stalled bytes are delivered, in order)
    proxy.stop()

Two kinds of partition, as networks fail:
- "reset": a peer or a firewall tears the connections down (RST/FIN) and rejects new ones
  until healed: clients notice at once and must reconnect.
- "stall": packets are silently dropped and TCP keeps retransmitting them: connections stay
  up, nothing arrives, and when the network heals everything sent meanwhile arrives late,
  in order. Clients notice nothing but silence.
- "blackhole": as a stall, but what was sent is lost and the connections open at the cut
  never carry anything again (a NAT or firewall that forgot them): only clients that
  notice the silence and reconnect are heard after the heal.
`drop_silently()` is the blackhole of a NAT table flush on a healthy network: the open
connections go dead at once, while new ones work.

The proxy runs its own event loop in a thread, so it keeps forwarding whatever the test's
loop is doing; its methods may be called from any thread and return once they took effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from tests.redis_server import free_port

OPEN, RESET, STALL, BLACKHOLE = "open", "reset", "stall", "blackhole"


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.mode = OPEN
        self.connections_accepted = 0
        self.connections_refused = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._flowing: asyncio.Event | None = None  # set unless stalled
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._dead: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._handlers: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        """As a Redis URL (the proxy itself speaks no protocol)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def cut(self, mode: str = RESET) -> None:
        if mode not in (RESET, STALL, BLACKHOLE):
            raise ValueError(f"a cut is {RESET!r}, {STALL!r} or {BLACKHOLE!r}, not {mode!r}")
        self._call(self._set(mode))

    def drop_silently(self) -> None:
        self._call(self._kill_links())

    def heal(self) -> None:
        self._call(self._set(OPEN))

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self._stop())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def _call(self, coroutine) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    # -- on the proxy's loop ---------------------------------------------------------------

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _set(self, mode: str) -> None:
        self.mode = mode
        if mode == OPEN:
            self._flowing.set()
            return
        self._flowing.clear()
        if mode == BLACKHOLE:
            await self._kill_links()
        if mode == RESET:
            for client, upstream in list(self._links):
                client.transport.abort()
                upstream.transport.abort()
            self._links.clear()

    async def _kill_links(self) -> None:
        self._dead |= self._links

    async def _stop(self) -> None:
        self._flowing.set()
        if self._server is not None:
            self._server.close()
        for client, upstream in list(self._links):
            client.transport.abort()
            upstream.transport.abort()
        self._links.clear()
        if self._handlers:  # their sockets are gone: they end at once (never cancel them:
            await asyncio.wait(self._handlers, timeout=2)  # asyncio's streams then complain)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._handlers.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == RESET:
            self.connections_refused += 1
            writer.transport.abort()
            return
        await self._flowing.wait()  # a connection made during a stall hangs until it heals
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        if self.mode == RESET:  # cut while connecting
            up_writer.transport.abort()
            writer.transport.abort()
            return
        self.connections_accepted += 1
        link = (writer, up_writer)
        self._links.add(link)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, link), self._pipe(up_reader, writer, link)
            )
        finally:
            self._links.discard(link)
            self._dead.discard(link)
            for w in link:
                w.transport.abort()

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, link: tuple
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await source.read(65536):
                if link in self._dead:
                    continue  # lost, and so is everything after it
                await self._flowing.wait()  # stalled bytes wait here, in order
                if link in self._dead:
                    continue
                if sink.transport.is_closing():
                    return
                sink.write(data)
                await sink.drain()
        sink.transport.abort()
