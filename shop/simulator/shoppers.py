"""Simulated shoppers: real HTTP and websocket clients against running nodes.

Each shopper GETs the storefront (which names its cart in the cart cookie), reads
the item ids on sale and the product pages from it, opens its tabs (shopper sockets with
that cookie and the site's Origin), then adds and removes items at random, one action at a
time, as a person would. Shoppers come and go (`churn`, departures per second across the
population); arrivals keep about `shoppers` online.

`Simulation` is the API for tests and benchmarks: `start()`, `settle()` (stop coming, going
and acting; returns the `Truth` the server must show), `stop()` (close everything; returns
the `Summary`). `run(config)` does all three, holding the settled population for
`config.hold` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .report import Counters, Summary, Truth
from .web import USER_AGENT, HTTPError, Node, cookie_header, fetch

# Each shopper waits at least this long between actions: 10 actions/s at most, half the
# server's rate limit of 20 messages/s per socket.
MIN_THINK = 0.1
# Share of actions that remove an item (when the cart holds any): carts grow slowly.
REMOVE_SHARE = 0.4
# A failed arrival keeps its place this long before it is retried: a dead node is not hammered.
RETRY_DELAY = 1.0
CLOSE_TIMEOUT = 5.0

_ITEM_BUTTON = re.compile(r"<button\b[^>]*\bdata-item-id=\"(\d+)\"[^>]*>")
_PRODUCT_LINK = re.compile(r'href="(/products/[^"/?#]+/)"')


@dataclass(frozen=True)
class Config:
    """What to simulate. Durations are in seconds; `churn` is departures per second."""

    nodes: tuple[Node, ...]
    shoppers: int = 10
    tabs: int = 1
    duration: float = 10.0
    churn: float = 0.0
    think: float = 1.0
    hold: float = 0.0
    seed: int | None = None
    connect_timeout: float = 10.0
    reply_timeout: float = 10.0
    connect_concurrency: int = 50

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ValueError("give at least one node URL")
        for name in ("shoppers", "tabs", "connect_concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("duration", "connect_timeout", "reply_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds")
        if self.churn < 0 or self.hold < 0:
            raise ValueError("churn and hold cannot be negative")
        if self.think < MIN_THINK:
            raise ValueError(f"think must be at least {MIN_THINK} s (the server rate-limits)")


@dataclass(frozen=True)
class Live:
    """Figures for a progress display."""

    phase: str
    elapsed: float
    online: int
    sockets: int
    actions_sent: int
    errors: int


class ArrivalFailed(Exception):
    """A shopper could not get a cart or open its tabs; `reason` is the summary's key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConnectionLost(Exception):
    """The socket closed while an action waited for its reply."""


def storefront(html: str) -> tuple[list[int], list[str]]:
    """(ids of the items on sale, page paths) from the storefront page's size buttons and
    product links. Sold-out sizes are rendered disabled and left out."""
    items = {
        int(match.group(1))
        for match in _ITEM_BUTTON.finditer(html)
        if not re.search(r"\sdisabled\b", match.group(0))
    }
    return sorted(items), ["/", *sorted(set(_PRODUCT_LINK.findall(html)))]


def cart_items(cart: dict[str, Any]) -> dict[int, int]:
    return {line["item_id"]: line["quantity"] for line in cart["items"]}


@dataclass(eq=False)
class Tab:
    ws: ClientConnection
    page: str
    cart: dict[int, int]  # this socket's latest cart message
    closing: bool = False
    pending: tuple[int, asyncio.Future[dict[str, Any]]] | None = None
    reader: asyncio.Task[None] | None = None


@dataclass(eq=False)
class Shopper:
    id: int
    node: Node
    cart_id: str
    items: dict[int, int]  # the cart as the server last confirmed it
    catalogue: list[int]
    tabs: list[Tab] = field(default_factory=list)
    busy: asyncio.Lock = field(default_factory=asyncio.Lock)  # held during an action
    actor: asyncio.Task[None] | None = None

    async def stop_acting(self) -> None:
        """Let the action in flight finish (it is bounded by the reply timeout), then stop."""
        if self.actor is None:
            return
        async with self.busy:
            self.actor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.actor
        self.actor = None


class Simulation:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.counters = Counters()
        self.rng = random.Random(config.seed)
        self.online: dict[int, Shopper] = {}
        self.phase = "created"
        self._arriving = 0
        self._settling = False
        self._settled: Truth | None = None
        self._nodes = itertools.cycle(config.nodes)
        self._shopper_ids = itertools.count(1)
        self._request_ids = itertools.count(1)
        self._gate = asyncio.Semaphore(config.connect_concurrency)
        self._changed = asyncio.Event()  # the population changed: refill it
        self._full = asyncio.Event()  # every shopper is online
        self._interrupted = asyncio.Event()
        self._runners: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()  # arrivals and departures in flight
        self._started_at = time.monotonic()

    # The run as a whole

    async def run(
        self, on_hold: Callable[[Simulation, Truth], Awaitable[None]] | None = None
    ) -> Summary:
        """Start, act for `duration`, settle, call `on_hold`, hold for `hold`, stop."""
        try:
            await self.start()
            await self._pause(self.config.duration)
            truth = await self.settle()
            self.phase = "holding"
            if on_hold is not None:
                await on_hold(self, truth)
            await self._pause(self.config.hold)
        finally:
            summary = await self.stop()
        return summary

    def interrupt(self) -> None:
        """End the acting or holding phase now (Ctrl-C): the run settles and stops cleanly."""
        self._interrupted.set()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._interrupted.wait(), seconds)

    async def start(self) -> None:
        self._started_at = time.monotonic()
        self.phase = "running"
        self._runners.append(asyncio.create_task(self._populate()))
        if self.config.churn > 0:
            self._runners.append(asyncio.create_task(self._churn()))

    async def populated(self, within: float) -> bool:
        """Wait until every shopper is online; False if that took longer than `within` s."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._full.wait()
                return True
        return False

    async def settle(self) -> Truth:
        """Stop arrivals, departures and actions; wait for those in flight; the truth.

        Arrivals still waiting for their turn (`connect_concurrency`) are dropped, so the
        truth may hold fewer than `shoppers` if the population had not filled up."""
        if self._settled is None:
            self.phase = "settling"
            self._settling = True
            for runner in self._runners:
                runner.cancel()
            await asyncio.gather(*self._runners, return_exceptions=True)
            await self._drain()
            await asyncio.gather(*(shopper.stop_acting() for shopper in self.online.values()))
            await self._drain()  # departures of shoppers dropped meanwhile
            self._settled = self.truth()
        return self._settled

    async def stop(self) -> Summary:
        """Settle, close every socket, and sum up."""
        truth = await self.settle()
        self.phase = "closing"
        for shopper in list(self.online.values()):
            self._leave(shopper, "end")
        await self._drain()
        self.phase = "done"
        return Summary.of(self.counters, time.monotonic() - self._started_at, truth)

    def truth(self) -> Truth:
        """The carts and sockets held open right now."""
        shoppers = self.online.values()
        return Truth(
            carts={s.cart_id: dict(s.items) for s in shoppers},
            pages={s.cart_id: [t.page for t in s.tabs if not t.closing] for s in shoppers},
        )

    def live(self) -> Live:
        c = self.counters
        return Live(
            phase=self.phase,
            elapsed=time.monotonic() - self._started_at,
            online=len(self.online),
            sockets=c.connections_opened - c.connections_closed - c.connections_dropped,
            actions_sent=c.actions_sent,
            errors=sum(c.replies_error.values())
            + sum(c.connection_failures.values())
            + c.reply_timeouts
            + c.connections_dropped,
        )

    # Coming and going

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _populate(self) -> None:
        while True:
            self._changed.clear()
            for _ in range(self.config.shoppers - len(self.online) - self._arriving):
                self._arriving += 1
                self._spawn(self._arrive(next(self._nodes)))
            await self._changed.wait()

    async def _churn(self) -> None:
        while True:
            await asyncio.sleep(self.rng.expovariate(self.config.churn))
            if self.online:
                self._leave(self.rng.choice(list(self.online.values())), "churn")

    async def _arrive(self, node: Node) -> None:
        try:
            async with self._gate:
                if self._settling:
                    return  # not begun yet: settling does not wait for a backlog of arrivals
                shopper = await self._open_shopper(node)
        except ArrivalFailed as failure:
            self.counters.connection_failures[failure.reason] += 1
            await asyncio.sleep(RETRY_DELAY)
        else:
            self.online[shopper.id] = shopper
            self.counters.shoppers_arrived += 1
            if len(self.online) >= self.config.shoppers:
                self._full.set()
            for tab in shopper.tabs:
                tab.reader = asyncio.create_task(self._read(shopper, tab))
            if not self._settling:
                shopper.actor = asyncio.create_task(self._act_forever(shopper))
        finally:
            self._arriving -= 1
            self._changed.set()

    def _leave(self, shopper: Shopper, reason: str) -> None:
        """Take the shopper offline at once (the truth no longer holds it) and close its
        tabs in the background. reason: churn, dropped (by the server or a timeout), end."""
        if self.online.pop(shopper.id, None) is None:
            return
        self._full.clear()
        if reason == "churn":
            self.counters.shoppers_departed += 1
        elif reason == "dropped":
            self.counters.shoppers_dropped += 1
        self._spawn(self._close_shopper(shopper))
        self._changed.set()

    async def _close_shopper(self, shopper: Shopper) -> None:
        await shopper.stop_acting()
        await asyncio.gather(*(self._close_tab(tab) for tab in shopper.tabs))

    async def _close_tab(self, tab: Tab) -> None:
        tab.closing = True
        await tab.ws.close()
        if tab.reader is not None:
            await tab.reader

    async def _open_shopper(self, node: Node) -> Shopper:
        try:
            page = await fetch(node, "/", within=self.config.connect_timeout)
        except HTTPError as error:
            raise ArrivalFailed(f"GET /: {error}") from None
        if page.status != 200:
            raise ArrivalFailed(f"GET /: HTTP {page.status}")
        if not page.cookies:
            raise ArrivalFailed("GET /: no cart cookie")
        catalogue, paths = storefront(page.body)
        opened: list[tuple[Tab, str]] = []
        try:
            for _ in range(self.config.tabs):
                opened.append(await self._open_tab(node, page.cookies, self.rng.choice(paths)))
        except BaseException:
            await asyncio.gather(*(self._discard(tab) for tab, _ in opened))
            raise
        cart_ids = {cart_id for _, cart_id in opened}
        if len(cart_ids) != 1:
            await asyncio.gather(*(self._discard(tab) for tab, _ in opened))
            raise ArrivalFailed("the tabs of one session got different carts")
        tabs = [tab for tab, _ in opened]
        return Shopper(
            id=next(self._shopper_ids),
            node=node,
            cart_id=cart_ids.pop(),
            items=dict(tabs[0].cart),
            catalogue=catalogue,
            tabs=tabs,
        )

    async def _open_tab(self, node: Node, cookies: dict[str, str], page: str) -> tuple[Tab, str]:
        """A connected shopper socket whose first message (its cart) has arrived."""
        timeout = self.config.connect_timeout
        try:
            ws = await connect(
                node.ws_url(f"/ws/cart/?page={quote(page)}"),
                origin=node.origin,  # type: ignore[arg-type]
                additional_headers={"Cookie": cookie_header(cookies)},
                user_agent_header=USER_AGENT,
                proxy=None,  # only ever the given node
                open_timeout=timeout,
                close_timeout=CLOSE_TIMEOUT,
            )
        except InvalidStatus as error:
            raise ArrivalFailed(f"handshake: HTTP {error.response.status_code}") from None
        except TimeoutError:
            raise ArrivalFailed("handshake: timeout") from None
        except (OSError, InvalidHandshake) as error:
            raise ArrivalFailed(f"handshake: {type(error).__name__}") from None
        self.counters.connections_opened += 1
        tab = Tab(ws, page, {})
        try:
            first = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        except (TimeoutError, ConnectionClosed, ValueError):
            await self._discard(tab)
            raise ArrivalFailed("no cart message after the handshake") from None
        if first.get("type") != "cart":
            await self._discard(tab)
            raise ArrivalFailed(f"first message: {first.get('code') or first.get('type')}")
        tab.cart = cart_items(first["cart"])
        return tab, first["cart"]["id"]

    async def _discard(self, tab: Tab) -> None:
        """Close a socket that never joined the population (no reader runs on it)."""
        await tab.ws.close()
        self.counters.connections_closed += 1

    # Each socket's messages

    async def _read(self, shopper: Shopper, tab: Tab) -> None:
        try:
            async for raw in tab.ws:
                self._receive(tab, json.loads(raw))
        except ConnectionClosed:
            pass
        finally:
            if tab.pending is not None and not tab.pending[1].done():
                tab.pending[1].set_exception(ConnectionLost())
            if tab.closing:
                self.counters.connections_closed += 1
            else:
                tab.closing = True
                self.counters.connections_dropped += 1
                self._leave(shopper, "dropped")

    def _receive(self, tab: Tab, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "cart":
            tab.cart = cart_items(message["cart"])
        elif kind == "stock":
            self.counters.stock_messages += 1
        elif kind in {"ok", "error"} and tab.pending is not None:
            request_id, future = tab.pending
            # A rate-limited frame is not read, so its error carries no request_id; one
            # action at a time per shopper means it can only be the pending one.
            if message.get("request_id", request_id) == request_id and not future.done():
                future.set_result(message)

    # Actions

    async def _act_forever(self, shopper: Shopper) -> None:
        while True:
            await asyncio.sleep(max(MIN_THINK, self.rng.expovariate(1 / self.config.think)))
            async with shopper.busy:
                await self._act(shopper)

    async def _act(self, shopper: Shopper) -> None:
        """One add or remove on a random tab, timed from send to reply."""
        tabs = [tab for tab in shopper.tabs if not tab.closing]
        remove = bool(shopper.items) and self.rng.random() < REMOVE_SHARE
        if not tabs or not (remove or shopper.catalogue):
            return
        tab = self.rng.choice(tabs)
        item_id = self.rng.choice(sorted(shopper.items) if remove else shopper.catalogue)
        request_id = next(self._request_ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        tab.pending = (request_id, future)
        kind = "remove_item" if remove else "add_item"
        started = time.perf_counter()
        try:
            await tab.ws.send(
                json.dumps({"type": kind, "item_id": item_id, "request_id": request_id})
            )
            self.counters.actions_sent += 1
            reply = await asyncio.wait_for(future, self.config.reply_timeout)
        except ConnectionClosed:
            return  # not sent; the reader counts the drop
        except ConnectionLost:
            self.counters.replies_lost += 1
            return
        except TimeoutError:
            # The cart's state is unknown now: the shopper gives up and leaves.
            self.counters.reply_timeouts += 1
            self._leave(shopper, "dropped")
            return
        finally:
            tab.pending = None
        self.counters.latencies.append(time.perf_counter() - started)
        if reply["type"] == "error":
            self.counters.replies_error[str(reply.get("code"))] += 1
            return
        self.counters.replies_ok += 1
        expected = dict(shopper.items)
        expected[item_id] = expected.get(item_id, 0) + (-1 if remove else 1)
        if tab.cart != {k: q for k, q in expected.items() if q > 0}:
            self.counters.cart_mismatches += 1
        shopper.items = dict(tab.cart)


async def run(
    config: Config, on_hold: Callable[[Simulation, Truth], Awaitable[None]] | None = None
) -> Summary:
    """Simulate `config` and return its summary (see `Simulation.run`)."""
    return await Simulation(config).run(on_hold)
