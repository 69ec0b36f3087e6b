"""The shopper socket `/ws/cart/?page=<path>` (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from shop import carts, identity, open_tabs, socket_limits
from shop.broadcast import STOCK_TOPIC, cart_group, local_node, publish_cart
from shop.fanout import LocalFanout
from shop.login_state import LOGIN_CHANGED_CLOSE_CODE
from shop.metrics import OPEN_SHOPPER_SOCKETS
from shop.pages import page_bucket
from shop.presence import CARTS_TOPIC, cart_meta
from shop.product_feed import ProductFeed, product_feed
from tracker import Tracker, TransportUnavailable
from tracker.process import ShuttingDown, process_tracker

logger = logging.getLogger(__name__)

MAX_FRAME_BYTES = 4096
# At most RATE_LIMIT messages within any RATE_WINDOW seconds, per connection.
RATE_LIMIT = 20
RATE_WINDOW = 1.0
MAX_PAGE_LENGTH = 200
# Close code after a `no_cart` error: the handshake names no cart (no storefront page was
# viewed with these cookies). Reconnecting will not help.
NO_CART_CLOSE_CODE = 4001
# Close code for a socket that arrives while this server process shuts down: the page
# reconnects (to another node behind a load balancer).
SHUTTING_DOWN_CLOSE_CODE = 4503

_NO_REQUEST_ID = object()
# A request_id is null, an integer within +-2^53 (exact in every JSON implementation) or a
# string of at most MAX_REQUEST_ID_LENGTH characters: anything else could be costly or
# impossible to echo (a list nested 970 deep parses, but its reply cannot be encoded).
MAX_SAFE_INTEGER = 2**53
MAX_REQUEST_ID_LENGTH = 64


def valid_request_id(value: Any) -> bool:
    if value is None:
        return True
    if type(value) is int:  # not bool, not float
        return -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER
    return isinstance(value, str) and len(value) <= MAX_REQUEST_ID_LENGTH


def clean_page(query_string: bytes) -> str:
    """The `page` query parameter if it is a plausible path, else "/"."""
    values = parse_qs(query_string.decode("latin-1")).get("page", [])
    page = values[0] if values else ""
    if page.startswith("/") and len(page) <= MAX_PAGE_LENGTH and page.isprintable():
        return page
    return "/"


def wants_levels(query_string: bytes) -> bool:
    """Whether the page asks for the current stock levels (`levels=1`) on connecting."""
    return parse_qs(query_string.decode("latin-1")).get("levels") == ["1"]


class RateLimiter:
    """Allows at most `limit` events within any `window`-second span (sliding window)."""

    def __init__(self, limit: int = RATE_LIMIT, window: float = RATE_WINDOW) -> None:
        self.limit = limit
        self.window = window
        self.times: deque[float] = deque()

    def allow(self, now: float) -> bool:
        while self.times and now - self.times[0] >= self.window:
            self.times.popleft()
        if len(self.times) >= self.limit:
            return False
        self.times.append(now)
        return True


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN and Infinity could not be echoed back


class BadMessage(Exception):
    def __init__(self, code: str, message: str, request_id: Any = _NO_REQUEST_ID) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


def _handshake(shopper: identity.Shopper, page: str) -> tuple[carts.CartSnapshot | None, str]:
    """The shopper's cart (None if its login state has ended) and the page's bucket on the
    staff dashboard (shop.pages). Blocking."""
    return _open(shopper), page_bucket(page)


def _open(shopper: identity.Shopper) -> carts.CartSnapshot | None:
    """The shopper's cart, or None if its login state has ended. Blocking."""
    if not identity.still_logged_in(shopper):
        return None
    return carts.load_snapshot(shopper.cart_id, shopper.user_id)


def _change(operation: Any, shopper: identity.Shopper, item_id: int) -> carts.CartSnapshot:
    """One cart operation on behalf of the shopper, refused once its login state has ended
    (carts.NotYourCart). Blocking."""
    if not identity.still_logged_in(shopper):
        raise carts.NotYourCart()
    return operation(shopper.cart_id, item_id, shopper.user_id)


class ShoppingCartConsumer(AsyncJsonWebsocketConsumer):
    """One open storefront page. Its cart and login state come from the handshake's cookies
    and session (shop.identity).

    Every state of the cart reaches the client through `send_cart`; the connection is in its
    cart's group (changes from other tabs) and its login state's group (closed when that
    state ends: shop.login_state), and in this node's stock topic (shop.broadcast: stock
    level pushes, written to the socket by the node's fan-out hub). While open it is tracked
    on topic `carts` under its cart id, its meta following the cart.
    """

    cart_id: str | None = None
    shopper: identity.Shopper | None = None
    joined: tuple[str, ...] = ()  # the channel-layer groups it joined
    limit_keys: tuple[str, ...] = ()  # counted in socket_limits.COUNTS under these
    page: str = "/"
    cart_revision: int = -1
    cart: carts.CartSnapshot | None = None
    tracker: Tracker | None = None  # set while this connection is tracked
    expected_revision: int = -1  # the newest revision of this cart the tracker has shown
    counted: bool = False  # in OPEN_SHOPPER_SOCKETS
    fanout: LocalFanout | None = None  # set while in the node's stock topic
    watching: tuple[ProductFeed, str] | None = None  # the product feed and product followed
    username: str | None = None  # a logged-in shopper's
    rate_limiter: RateLimiter | None = None

    async def __call__(self, scope, receive, send) -> None:
        """Run the connection; however it ends, its page leaves the tracker.

        `disconnect` runs only when the client goes away. A consumer also ends when its
        channel layer fails (Redis lost: every consumer of the node fails at once and daphne
        closes their sockets with 1011) or when it is cancelled (server shutdown). Its row
        would then stay tracked: a ghost on every node's staff dashboard for as long as this
        process lives.
        """
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.leave()

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Hand a message to its handler, as channels' AsyncConsumer.dispatch does, but
        without its `aclose_old_connections()` first: that is a hop to the database thread
        and back before every message (a frame, a cart change
        from another tab, this tab's own change echoed by its cart's group), queued behind
        whatever that thread is doing, and most messages need no database at all. The
        database is only reached through `database_sync_to_async`, which closes unusable or
        expired connections in that thread before and after each call
        (channels.db.DatabaseSyncToAsync): the same clean-up, where and when the database
        is used."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        self.page = clean_page(self.scope.get("query_string", b""))
        # Before the accept: once the socket is open daphne keeps none of the handshake's
        # headers (shop.websockets).
        cookies = identity.handshake_cookies(self.scope)
        await self.accept()
        OPEN_SHOPPER_SOCKETS.inc()
        self.counted = True
        if identity.needs_session(cookies):
            shopper, self.username = await database_sync_to_async(identity.socket_shopper)(cookies)
        else:  # a cart cookie alone: nothing to read
            shopper, self.username = identity.socket_shopper(cookies)
        if shopper is None:
            await self.send_error("no_cart", "No cart in this session. Open the shop page first.")
            await self.close(code=NO_CART_CLOSE_CODE)
            return
        limits = socket_limits.limits_for(shopper.limit_key, self.scope.get("client"))
        if not socket_limits.COUNTS.admit(limits):
            await self.send_error(
                "too_many_sockets",
                "Too many pages of this shop are open from here. Close some, then reload.",
            )
            await self.close(code=socket_limits.TOO_MANY_SOCKETS_CLOSE_CODE)
            return
        self.limit_keys = tuple(limits)
        self.shopper, self.cart_id = shopper, shopper.cart_id
        # Join before reading, so that neither a change of the cart nor the end of the login
        # state between the read and the join is missed.
        await self.join(*dict.fromkeys([cart_group(shopper.cart_id), *shopper.groups]))
        cart, self.page = await database_sync_to_async(_handshake)(shopper, self.page)
        if cart is None:  # its session is gone, or its cart now belongs to another login
            await self.close(code=LOGIN_CHANGED_CLOSE_CODE)
            return
        node = await local_node()
        await self.send_cart(cart)
        query = self.scope.get("query_string", b"")
        levels = node.stock.levels_frame() if wants_levels(query) else None
        node.fanout.join(STOCK_TOPIC, self.base_send, levels)
        self.fanout = node.fanout
        await self.start_tracking()

    async def join(self, *groups: str) -> None:
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)
            self.joined += (group,)

    async def start_tracking(self) -> None:
        """Track this page. The shop keeps working if the tracker cannot start (Redis was
        down at start-up and still is): the page is then only missing from the staff
        dashboard. During shutdown the socket is closed, so the page reconnects elsewhere."""
        try:
            tracker = await process_tracker()
        except TransportUnavailable as error:
            logger.warning("shopper page not tracked: %s", error)
            return
        except ShuttingDown:
            await self.close(code=SHUTTING_DOWN_CLOSE_CODE)
            return
        if self.cart_id is None or self.cart is None:
            return  # (connect tracks only a page that has its cart)
        self.joined_at = time.time()
        meta = self.presence_meta(self.cart)
        await tracker.track(self.channel_name, CARTS_TOPIC, self.cart_id, meta)
        self.tracker = tracker
        open_tabs.open_tabs(tracker).add(self)
        feed = await product_feed()
        slug = feed.watch(self.page, self.base_send)
        if slug is not None:  # a product page: its shoppers' numbers follow (shop.product_feed)
            self.watching = (feed, slug)

    def presence_meta(self, cart: carts.CartSnapshot) -> dict[str, Any]:
        return cart_meta(cart, page=self.page, user=self.username, joined_at=self.joined_at)

    async def leave(self) -> None:
        """Stop counting and tracking this page (once; no I/O, so it also runs while the
        consumer is being cancelled or after its channel layer failed)."""
        if self.counted:
            OPEN_SHOPPER_SOCKETS.dec()
            self.counted = False
        socket_limits.COUNTS.release(self.limit_keys)
        self.limit_keys = ()
        fanout, self.fanout = self.fanout, None
        if fanout is not None:
            fanout.leave(STOCK_TOPIC, self.base_send)
        watching, self.watching = self.watching, None
        if watching is not None:
            feed, slug = watching
            feed.unwatch(slug, self.base_send)
        tracker, self.tracker = self.tracker, None
        if tracker is not None:
            open_tabs.open_tabs(tracker).discard(self)
            if tracker.running and self.cart_id is not None:
                await tracker.untrack(self.channel_name, CARTS_TOPIC, self.cart_id)

    async def disconnect(self, code: int) -> None:
        await self.leave()
        for group in self.joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def send_cart(self, cart: carts.CartSnapshot) -> None:
        """The one way this connection learns its cart's state and shows it to the client.

        States arrive from the database (connect, own changes) and from other tabs through
        the channel layer, possibly late or twice; only newer revisions are sent.
        """
        if cart["revision"] <= self.cart_revision:
            return
        self.cart_revision = cart["revision"]
        self.cart = cart
        await self.send_json({"type": "cart", "cart": carts.wire_cart(cart)})
        if self.tracker is not None and self.tracker.running and self.cart_id is not None:
            await self.tracker.update(
                self.channel_name, CARTS_TOPIC, self.cart_id, self.presence_meta(cart)
            )

    async def send_json(self, content: Any, close: bool = False) -> None:
        """Send a JSON frame. Once the socket is in the node's fan-out hub (connected), its
        frames go through the hub: straight to the TCP socket under daphne, as the stock
        frames do, in order with them, instead of through daphne's ASGI send, autobahn's
        framing and Twisted's write registration (the better part of the event loop's
        time per frame: bench/README.md, issue 12)."""
        if self.fanout is None or close:
            await super().send_json(content, close)
            return
        self.fanout.send(self.base_send, await self.encode_json(content))

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        """channels' JSON frame handling (decode_json, then receive_json), behind the checks
        that come before parsing: the rate, binary frames (channels would raise on those,
        and on an empty text frame), the size. A BadMessage is answered with its error."""
        try:
            if self.rate_limiter is None:  # made with the first message: most sockets send none
                self.rate_limiter = RateLimiter()
            if not self.rate_limiter.allow(time.monotonic()):
                raise BadMessage("rate_limited", f"More than {RATE_LIMIT} messages a second.")
            if text_data is None:
                raise BadMessage("invalid_message", "Send JSON text frames, not binary ones.")
            if len(text_data.encode("utf-8", "surrogatepass")) > MAX_FRAME_BYTES:
                raise BadMessage("too_large", f"Messages are limited to {MAX_FRAME_BYTES} bytes.")
            await self.receive_json(await self.decode_json(text_data), **kwargs)
        except BadMessage as error:
            await self.send_error(error.code, error.message, error.request_id)

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        try:
            return json.loads(text_data, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            raise BadMessage("invalid_message", "The message is not valid JSON.") from None

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict):
            raise BadMessage("invalid_message", "The message must be a JSON object.")
        await self.handle(content)

    async def handle(self, message: dict[str, Any]) -> None:
        request_id = message.get("request_id", _NO_REQUEST_ID)
        if request_id is not _NO_REQUEST_ID and not valid_request_id(request_id):
            raise BadMessage(
                "invalid_message",
                "`request_id` must be null, an integer within +-2^53 or a string of at most "
                f"{MAX_REQUEST_ID_LENGTH} characters.",
            )
        kind = message.get("type")
        if not isinstance(kind, str):
            raise BadMessage("invalid_message", "The message needs a string `type`.", request_id)
        operation = {"add_item": carts.add_item, "remove_item": carts.remove_item}.get(kind)
        if operation is None:
            raise BadMessage("unknown_type", f"Unknown message type {kind[:40]!r}.", request_id)
        item_id = message.get("item_id")
        if type(item_id) is not int:  # bool is an int subclass, and not an item id
            raise BadMessage("invalid_message", "`item_id` must be an integer.", request_id)
        if self.shopper is None:
            raise BadMessage("no_cart", "No cart in this session.", request_id)
        try:
            cart = await database_sync_to_async(_change)(operation, self.shopper, item_id)
        except carts.NotYourCart:
            await self.close(code=LOGIN_CHANGED_CLOSE_CODE)
            return
        except carts.CartError as error:
            raise BadMessage(error.code, error.message, request_id) from None
        # The change is stored: the other tabs hear of it whatever becomes of this reply.
        await publish_cart(cart)
        await self.send_cart(cart)
        await self.send_json(
            {"type": "ok", "request_id": None if request_id is _NO_REQUEST_ID else request_id}
        )

    async def send_error(self, code: str, message: str, request_id: Any = _NO_REQUEST_ID) -> None:
        payload = {"type": "error", "code": code, "message": message}
        if request_id is not _NO_REQUEST_ID:
            payload["request_id"] = request_id
        await self.send_json(payload)

    def expect(self, revision: int) -> None:
        """The tracker shows this cart at `revision` (see shop.open_tabs): unless the
        channel layer brings it within the grace period, reload the cart."""
        if revision <= max(self.cart_revision, self.expected_revision):
            return
        self.expected_revision = revision
        loop = asyncio.get_running_loop()
        loop.call_later(open_tabs.GRACE_SECONDS, self._check_expected, revision)

    def _check_expected(self, revision: int) -> None:
        if self.tracker is not None and self.cart_revision < revision:
            asyncio.get_running_loop().create_task(self._reload())

    async def _reload(self) -> None:
        cart = await database_sync_to_async(_open)(self.shopper)
        if cart is not None and self.tracker is not None:
            logger.info(
                "cart %s caught up to revision %d from the database", self.cart_id, cart["revision"]
            )
            await self.send_cart(cart)

    # Channel-layer events

    async def cart_changed(self, event: dict[str, Any]) -> None:
        await self.send_cart(event["cart"])

    async def login_changed(self, event: dict[str, Any]) -> None:
        if event.get("anonymous") and self.shopper is not None and self.shopper.session_key:
            return  # the anonymous tabs of this cart ended, and this one is logged in
        await self.close(code=LOGIN_CHANGED_CLOSE_CODE)
