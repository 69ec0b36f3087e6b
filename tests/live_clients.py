"""Real clients of a running server (see `tests.daphne_server`): HTTP with a cookie jar, and
websockets through the `websockets` library, as a browser would use them.

    shopper = Visitor(node.url)
    shopper.get("/")                               # the first storefront page names the cart
    tab = await shopper.open_tab(node, "/x/")      # /ws/cart/?page=/x/, session cookie sent
    await tab.request({"type": "add_item", "item_id": 7})

    staff = Visitor(node.url)
    staff.login("boss", "secret")
    view = await staff.open_dashboard(node)        # snapshot, then diffs applied in order
    await view.until(lambda v: v.stats["shoppers"] == 1)   # at most 5 s

Used by the cluster tests and by `bench/dashboard_bench.py`; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import copy
import http.cookiejar
import itertools
import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.dashboard.support import apply_stats_diff

ITEM_BUTTON = re.compile(r'data-item-id="(\d+)" data-level="(\w+)"')
CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


class Node(Protocol):
    """What the clients need of a server (a `DaphneServer`)."""

    @property
    def url(self) -> str: ...
    @property
    def ws_url(self) -> str: ...


class Visitor:
    """One browser's cookies (shared by every node it visits, as on one site)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str, base_url: str | None = None) -> str:
        with self.opener.open((base_url or self.base_url) + path, timeout=10) as response:
            return response.read().decode()

    def post(self, path: str, fields: dict[str, str]) -> str:
        data = urllib.parse.urlencode(fields).encode()
        with self.opener.open(self.base_url + path, data=data, timeout=10) as response:
            return response.read().decode()

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)

    @property
    def cookie_header(self) -> str:
        return "; ".join(f"{c.name}={c.value}" for c in self.jar)

    # -- shopper --------------------------------------------------------------------------

    def item_ids(self, level: str = "high", page: str = "/") -> list[int]:
        """Ids of the sizes on a storefront page (the home page) with the given stock level."""
        return [int(i) for i, lvl in ITEM_BUTTON.findall(self.get(page)) if lvl == level]

    async def open_tab(
        self, node: Node, page: str, within: float = 10, *, levels: bool = False
    ) -> Tab:
        """A shopper page on `node`: the socket, once its first `cart` message arrived
        (handshake and cart each within `within` s; the socket is closed if either fails).
        `levels`: ask for the current stock levels, as the page's script does (they arrive
        next, and are taken too)."""
        if self.cookie("cart") is None and self.cookie("sessionid") is None:
            raise AssertionError("no cart yet: GET a storefront page first")
        query = f"page={urllib.parse.quote(page)}" + ("&levels=1" if levels else "")
        ws = await connect(
            f"{node.ws_url}/ws/cart/?{query}",
            additional_headers={"Cookie": self.cookie_header, "Origin": node.url},
            open_timeout=within,
        )
        tab = Tab(ws, page)
        try:
            await tab.wait_cart(within)
            if levels and (await tab._take(within))["type"] != "stock_levels":
                raise AssertionError("no stock levels after the cart")
        except BaseException:
            await tab.abort()
            raise
        return tab

    # -- staff ----------------------------------------------------------------------------

    def login(self, username: str, password: str) -> None:
        page = self.get("/accounts/login/")
        match = CSRF_INPUT.search(page)
        if match is None:
            raise AssertionError("the login page has no CSRF token")
        self.post(
            "/accounts/login/",
            {
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": match[1],
                "next": "/dashboard/",
            },
        )
        if self.cookie("sessionid") is None:
            raise AssertionError(f"login as {username!r} failed")

    def logout(self) -> None:
        """Log out through the header's form (a POST with the page's CSRF token)."""
        match = CSRF_INPUT.search(self.get("/"))
        if match is None:
            raise AssertionError("no logout form: not logged in")
        self.post("/accounts/logout/", {"csrfmiddlewaretoken": match[1]})

    def token(self, node: Node) -> str:
        return json.loads(self.get("/dashboard/token/", base_url=node.url))["token"]

    async def open_dashboard(self, node: Node, within: float = 10) -> StaffClient:
        """A staff socket on `node` with a fresh token, once its snapshot arrived (handshake
        and snapshot each within `within` s; the socket is closed if either fails)."""
        token = await asyncio.to_thread(self.token, node)
        ws = await connect(
            f"{node.ws_url}/ws/dashboard/?token={urllib.parse.quote(token)}",
            additional_headers={"Cookie": self.cookie_header, "Origin": node.url},
            open_timeout=within,
        )
        client = StaffClient(ws)
        try:
            await client.wait_snapshot(within)
        except BaseException:
            await client.abort()
            raise
        return client


class _Reader:
    """Reads every message of a socket as it arrives, stamped with `time.perf_counter()`."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.inbox: asyncio.Queue[tuple[float, dict[str, Any] | None]] = asyncio.Queue()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.inbox.put_nowait((time.perf_counter(), json.loads(raw)))
        except ConnectionClosed:
            pass  # closed abnormally (a crashed or killed server): `ws.close_code` tells
        finally:
            self.inbox.put_nowait((time.perf_counter(), None))  # closed

    async def next(self, within: float) -> tuple[float, dict[str, Any]]:
        try:
            if self.inbox.empty():  # (wait_for with no time left would not even look)
                arrived, message = await asyncio.wait_for(self.inbox.get(), within)
            else:
                arrived, message = self.inbox.get_nowait()
        except TimeoutError:
            raise TimeoutError(f"no message within {within:.3f} s") from None
        if message is None:
            self.inbox.put_nowait((arrived, None))
            raise ConnectionError(f"socket closed ({self.ws.close_code} {self.ws.close_reason})")
        return arrived, message

    async def _take(self, within: float) -> dict[str, Any]:
        """The next message, after the subclass has taken note of it."""
        return (await self.next(within))[1]

    async def drain(self, seconds: float) -> None:
        """Take whatever arrives within `seconds`."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                await self._take(left)
            except TimeoutError:
                return

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.wait_for(self.task, 10)

    async def abort(self) -> None:
        """Close without waiting for the server's goodbye (it may be dead or hanging)."""
        self.ws.transport.abort()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    @property
    def open(self) -> bool:
        """Whether the server has not closed it (as far as this client knows)."""
        return self.ws.close_code is None and not self.task.done()


class Tab(_Reader):
    """One open shopper page: its latest cart, and requests answered by `ok`."""

    _ids = itertools.count(1)

    def __init__(self, ws: ClientConnection, page: str) -> None:
        super().__init__(ws)
        self.page = page
        self.cart: dict[str, Any] | None = None
        self.arrived = 0.0  # perf_counter when the last message taken arrived
        self.levels: dict[int, str] = {}  # stock levels as this page shows them
        self.stock: list[tuple[int, str]] = []  # every `stock` message, in order

    @property
    def cart_id(self) -> str:
        assert self.cart is not None
        return self.cart["id"]

    @property
    def items(self) -> dict[str, int]:
        assert self.cart is not None
        return {str(line["item_id"]): line["quantity"] for line in self.cart["items"]}

    async def _take(self, within: float) -> dict[str, Any]:
        self.arrived, message = await self.next(within)
        if message["type"] == "cart":
            self.cart = message["cart"]
        elif message["type"] == "stock_levels":
            self.levels.update({int(k): level for k, level in message["levels"].items()})
        elif message["type"] == "stock":
            self.levels[message["item_id"]] = message["level"]
            self.stock.append((message["item_id"], message["level"]))
        return message

    async def wait_cart(self, within: float = 10) -> None:
        message = await self._take(within)
        if message["type"] != "cart":
            raise AssertionError(f"expected the cart first, got {message}")

    async def until_level(self, item_id: int, level: str, within: float = 5) -> None:
        """Take messages until this page shows `level` for the item."""
        deadline = time.monotonic() + within
        while self.levels.get(item_id) != level:
            await self._take(max(0.0, deadline - time.monotonic()))

    async def until_items(self, items: dict[str, int], within: float = 5) -> None:
        """Take messages until this page's cart holds `items` (a change from another tab)."""
        deadline = time.monotonic() + within
        while self.items != items:
            await self._take(max(0.0, deadline - time.monotonic()))

    async def send(self, message: dict[str, Any]) -> int:
        """Send a request; returns its request_id (see `reply`)."""
        request_id = next(self._ids)
        await self.ws.send(json.dumps({**message, "request_id": request_id}))
        return request_id

    async def reply(self, request_id: int, within: float = 10) -> dict[str, Any]:
        """The `ok` for request_id (the cart it changed has arrived before it); it arrived
        at `self.arrived`."""
        deadline = time.monotonic() + within
        while True:
            message = await self._take(max(0.0, deadline - time.monotonic()))
            if message.get("request_id") == request_id:
                if message["type"] != "ok":
                    raise AssertionError(f"request {request_id} failed: {message}")
                return message

    async def request(self, message: dict[str, Any], within: float = 10) -> dict[str, Any]:
        return await self.reply(await self.send(message), within)


@dataclass
class Diff:
    arrived: float  # perf_counter at arrival
    stats: dict[str, Any]
    changed: bool  # False: applying it changed nothing (a duplicate)


class StaffClient(_Reader):
    """A staff socket: the snapshot with every diff applied in order, as dashboard.js does.

    Every diff that carries stats is recorded in `diffs`; one that changes nothing when
    applied is what a second copy of a diff would be (the hub never sends an empty change).
    """

    def __init__(self, ws: ClientConnection) -> None:
        super().__init__(ws)
        self.stats: dict[str, Any] = {}
        self.replicas: dict[str, str] = {}
        self.node: str | None = None
        self.diffs: list[Diff] = []

    async def _take(self, within: float) -> dict[str, Any]:
        arrived, message = await self.next(within)
        if message["type"] == "snapshot":
            self.stats = message["stats"]
            self.replicas = message["replicas"]
            self.node = message["node"]
        elif message["type"] == "diff":
            if "replicas" in message:
                self.replicas = message["replicas"]
            if message["stats"]:
                before = copy.deepcopy(self.stats)
                apply_stats_diff(self.stats, message["stats"])
                self.diffs.append(Diff(arrived, message["stats"], self.stats != before))
        return message

    async def wait_snapshot(self, within: float = 10) -> None:
        message = await self._take(within)
        if message["type"] != "snapshot":
            raise AssertionError(f"expected the snapshot first, got {message}")

    async def until(
        self, condition: Callable[[StaffClient], bool], within: float = 5, what: str = ""
    ) -> None:
        """Take messages until condition(self) holds; at most `within` seconds."""
        deadline = time.monotonic() + within
        while not condition(self):
            left = deadline - time.monotonic()
            try:
                await self._take(max(0.0, left))
            except TimeoutError:
                raise AssertionError(
                    f"staff view on {self.node} did not reach {what or condition} in "
                    f"{within} s; it has {self.stats} and replicas {self.replicas}"
                ) from None


# -- the truth a staff view must show -----------------------------------------------------


# The site's own routes, as shop.pages counts them: "/", the checkout and a product's page
# (tests open only released products of the seeded catalogue); any other path is "other".
SITE_PAGE = re.compile(r"/(checkout/|products/[-a-z0-9]+/)?")


def page_bucket(page: str) -> str:
    return page if SITE_PAGE.fullmatch(page) else "other"


def truth_of(tabs: Iterable[Tab]) -> dict:
    """The aggregates the staff views must show for these open tabs (docs/protocol.md), with the
    per-cart rows (pages and item count), which also catch a cart counted twice."""
    carts: dict[str, list[Tab]] = {}
    for tab in tabs:
        carts.setdefault(tab.cart_id, []).append(tab)
    items: dict[str, int] = {}
    paths: dict[str, int] = {}
    entries: dict[str, dict] = {}
    for cart_id, cart_tabs in carts.items():
        contents = cart_tabs[0].items
        if any(tab.items != contents for tab in cart_tabs):
            raise AssertionError(
                f"the tabs of cart {cart_id} disagree: {[t.items for t in cart_tabs]}; "
                "wait for them to agree (Tab.until_items) before asking for the truth"
            )
        for item_id, quantity in contents.items():
            items[item_id] = items.get(item_id, 0) + quantity
        entries[cart_id] = {"pages": len(cart_tabs), "items": sum(contents.values())}
        for tab in cart_tabs:
            paths[page_bucket(tab.page)] = paths.get(page_bucket(tab.page), 0) + 1
    return {
        "shoppers": len(carts),
        "pages": sum(len(t) for t in carts.values()),
        "items": items,
        "pages_by_path": paths,
        "carts": entries,
    }


def seen(view: StaffClient) -> dict:
    """A staff view's numbers in the terms of `truth_of` (per cart: pages and items)."""
    stats = view.stats
    return {
        "shoppers": stats["shoppers"],
        "pages": stats["pages"],
        "items": stats["items"],
        "pages_by_path": stats["pages_by_path"],
        "carts": {
            cart_id: {"pages": entry["pages"], "items": entry["items"]}
            for cart_id, entry in stats["carts"].items()
        },
    }
