"""What the storefront tells its pages, and how it gets there.

- A cart's change goes to every tab of that cart: the channel-layer group of the cart
  (`cart_group`), `cart.changed` with the cart's snapshot.
- A stock level's change goes to every page of every node, through the node-local fan-out
  (shop.fanout): `publish_stock` sends one message to every node naming the items whose
  level changed; each node then reads those items' stock once (`StockFeed`) and writes one
  `{"type": "stock", "item_id", "level"}` frame, encoded once, to each of its pages, and
  tells its staff dashboard hub. A node reads the levels rather than trusting the message,
  so that two checkouts racing on one item on two nodes cannot leave pages on the level
  that was committed first: whatever order their messages arrive in, the last read comes
  after the last commit. After every (re)subscription to Redis the node reads every level
  again and pushes those that changed meanwhile; a page that (re)connects asks for the
  current levels (`?levels=1`: one `stock_levels` frame before any change), so a change
  made while its socket was down (a Redis outage closes every shopper socket) is caught
  up too.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from redis.exceptions import RedisError

from shop.carts import CartSnapshot, StockChange
from shop.fanout import LocalFanout, NodeBus, publish_to_nodes
from shop.models import Item
from shop.per_loop import PerLoop
from shop.stock import stock_level

logger = logging.getLogger(__name__)

STOCK_TOPIC = "stock"  # the fan-out topic every storefront socket is in
STOCK_READ_RETRY_SECONDS = 1.0


CART_GROUP_PREFIX = "shop.cart."


def cart_group(cart_id: str) -> str:
    return f"{CART_GROUP_PREFIX}{cart_id}"


async def publish_cart(cart: CartSnapshot) -> None:
    await get_channel_layer().group_send(
        cart_group(cart["id"]), {"type": "cart.changed", "cart": cart}
    )


def publish_stock(changes: Iterable[StockChange]) -> None:
    """Tell every node that these items' stock levels changed (after the commit). Blocking:
    one Redis round trip. A failure is logged, not raised: the change is committed, and
    every node whose subscription was down too re-reads all levels when it is back."""
    item_ids = sorted({change.item_id for change in changes})
    if not item_ids:
        return
    try:
        publish_to_nodes(STOCK_TOPIC, item_ids)
    except RedisError as error:
        logger.error("stock levels of items %s not pushed: %s", item_ids, error)


# (level, released) of each item: what the stock feed reads.
Levels = dict[int, tuple[str, bool]]


def read_levels(item_ids: Iterable[int] | None) -> Levels:
    """The current level of the given items (all of them for None). Blocking."""
    rows = Item.objects.all() if item_ids is None else Item.objects.filter(pk__in=item_ids)
    return {
        pk: (stock_level(stock).value, released)
        for pk, stock, released in rows.values_list("pk", "stock", "product__released")
    }


class StockFeed:
    """The stock levels this node's pages show, pushed to them whenever they change.

    `changed` (a node bus message) marks items stale and `resync` (after a resubscription)
    all of them; one read at a time, in the database thread, picks them up, and their levels
    are delivered to the stock topic and to the listeners (the staff dashboard hub); see
    `_apply` for which."""

    def __init__(self, fanout: LocalFanout) -> None:
        self.fanout = fanout
        self.levels: Levels = {}
        self.listeners: set[Callable[[int], None]] = set()
        self._stale: set[int] = set()
        self._all_stale = False
        self._reading: asyncio.Task[None] | None = None
        self._frame: str | None = None  # the cached `stock_levels` frame

    async def load(self) -> None:
        self.levels = await database_sync_to_async(read_levels)(None)

    def changed(self, item_ids: Any) -> None:
        if not isinstance(item_ids, list) or not all(type(i) is int for i in item_ids):
            logger.warning("stock feed: dropped a message that is not a list of item ids")
            return
        self._stale.update(item_ids)
        self._read_soon()

    def resync(self) -> None:
        self._all_stale = True
        self._read_soon()

    def levels_frame(self) -> str:
        """`{"type": "stock_levels", "levels": {"<item_id>": level}}` of every released
        item, as this node last pushed them."""
        if self._frame is None:
            levels = {str(pk): level for pk, (level, released) in self.levels.items() if released}
            self._frame = json.dumps({"type": "stock_levels", "levels": levels})
        return self._frame

    def _read_soon(self) -> None:
        if self._reading is None or self._reading.done():
            # Its own context: the reads are the node's, not those of whoever noticed.
            self._reading = asyncio.get_running_loop().create_task(
                self._read(), context=contextvars.Context()
            )

    async def _read(self) -> None:
        while self._stale or self._all_stale:
            wanted = None if self._all_stale else self._stale
            self._stale, self._all_stale = set(), False
            try:
                fresh = await database_sync_to_async(read_levels)(wanted)
            except Exception:
                logger.exception("stock feed: reading levels failed; retrying")
                self._all_stale = True
                await asyncio.sleep(STOCK_READ_RETRY_SECONDS)
                continue
            self._apply(fresh, fresh.keys() if wanted is None else wanted, all_read=wanted is None)

    def _apply(self, fresh: Levels, item_ids: Iterable[int], *, all_read: bool) -> None:
        """Push the levels read. An item some node said changed is pushed as it is now,
        even if that is what this node pushed last (its stock may have been changed
        without a push since, say by a bulk update: a page rendered meanwhile shows that);
        after a full re-read only the levels that differ from the last pushed ones are."""
        for item_id in sorted(item_ids):
            now = fresh.get(item_id)
            before = self.levels.pop(item_id, None)
            if now is None:  # deleted
                self._frame = None
                continue
            self.levels[item_id] = now
            if before != now:
                self._frame = None
            if all_read and before is not None and before[0] == now[0]:
                continue
            frame = json.dumps({"type": "stock", "item_id": item_id, "level": now[0]})
            self.fanout.deliver(STOCK_TOPIC, frame)
            for listener in tuple(self.listeners):
                listener(item_id)


@dataclass(frozen=True)
class LocalNode:
    """This process's fan-out hub, node bus and stock feed."""

    fanout: LocalFanout
    bus: NodeBus
    stock: StockFeed


async def _start_node() -> LocalNode:
    fanout = LocalFanout()
    stock = StockFeed(fanout)
    await stock.load()
    bus = NodeBus(settings.REDIS_URL)
    bus.on(STOCK_TOPIC, stock.changed)
    bus.on_subscribed(stock.resync)
    bus.start()
    return LocalNode(fanout, bus, stock)


_node = PerLoop(_start_node)


async def local_node() -> LocalNode:
    """This event loop's node (started on first use: the stock levels read once, the node
    bus listening)."""
    return await _node.get()
