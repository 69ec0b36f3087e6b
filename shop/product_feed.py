"""What shoppers on a product page see of each other, live: the node's product feed.

One `ProductFeed` per server process (per event loop) follows the process's tracker replica:
every diff of the `carts` topic is folded into a `ProductPresence` (shop/product_presence.py)
in O(change), and at most once per `PRODUCT_PRESENCE_INTERVAL` the feed works out, for each
product whose numbers may have changed and that has pages open on this node, the message

    {"type": "product_presence", "product": slug, "viewers": int, "in_carts": {"<item_id>": int}}

(docs/protocol.md), encodes it once, and if it differs from the one sent before writes it
to the product's local pages through the node-local fan-out (shop/fanout.py, topic
`product:<slug>`). Nothing per socket crosses Redis: every node computes the same numbers
from its own replica. A page that starts watching gets the product's message at the
product's next flush (its own presence is counted by then), and from then on every change:
never twice the same numbers, never two messages within one interval.

Which items are a product's sizes, and which page is a product's, come from the catalogue,
read once and again when a page or an item is met that it does not know (a new product or
size, added on any node), at most every `CATALOGUE_RETRY_SECONDS`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.urls import Resolver404, resolve

from shop.broadcast import local_node
from shop.fanout import LocalFanout, Send
from shop.models import Item
from shop.per_loop import PerLoop
from shop.presence import CARTS_TOPIC
from shop.product_presence import ProductPresence
from tracker import Tracker
from tracker.process import process_tracker

logger = logging.getLogger(__name__)

CATALOGUE_RETRY_SECONDS = 5.0


def topic_of(slug: str) -> str:
    """The fan-out topic of a product's pages on this node."""
    return f"product:{slug}"


def product_of_page(page: str) -> str | None:
    """The slug of the product whose page `page` is (a page bucket of shop.pages), if any."""
    try:
        match = resolve(page)
    except Resolver404:
        return None
    return match.kwargs["slug"] if match.view_name == "shop:product" else None


def read_catalogue() -> dict[str, tuple[int, ...]]:
    """Each released product's slug and its sizes' item ids. Blocking."""
    sizes: dict[str, list[int]] = {}
    for slug, item_id in Item.objects.filter(product__released=True).values_list(
        "product__slug", "pk"
    ):
        sizes.setdefault(slug, []).append(item_id)
    return {slug: tuple(sorted(ids)) for slug, ids in sizes.items()}


class ProductFeed:
    def __init__(self, fanout: LocalFanout, interval: float) -> None:
        self.fanout = fanout
        self.interval = interval
        self.presence = ProductPresence()
        self.sizes: dict[str, tuple[int, ...]] = {}  # slug -> item ids
        self._product_of_item: dict[int, str] = {}
        self._product_of_page: dict[str, str | None] = {}  # a cache of product_of_page
        self._page_of_product: dict[str, str] = {}
        self._watchers: Counter[str] = Counter()  # slug -> this node's pages watching it
        self._dirty: set[str] = set()  # products whose numbers may have changed
        self._sent: dict[str, str] = {}  # slug -> the last message written to its pages
        self._newcomers: dict[str, list[Send]] = {}  # slug -> pages awaiting their first
        self._flush_handle: asyncio.Handle | None = None
        self._last_flush = float("-inf")  # loop time
        self._catalogue_read = float("-inf")  # monotonic
        self._reading: asyncio.Task[None] | None = None
        self._detach: Any = None

    # -- the catalogue ---------------------------------------------------------------------

    async def load(self) -> None:
        self._use(await database_sync_to_async(read_catalogue)())

    def _use(self, sizes: dict[str, tuple[int, ...]]) -> None:
        self._catalogue_read = time.monotonic()
        self.sizes = sizes
        self._product_of_item = {item: slug for slug, items in sizes.items() for item in items}
        self._dirty.update(self._watchers)  # a product's sizes may have changed

    def _missing(self) -> None:
        """Something not in the catalogue was met: read it again (not too often)."""
        if self._reading is not None and not self._reading.done():
            return
        if time.monotonic() - self._catalogue_read < CATALOGUE_RETRY_SECONDS:
            return
        self._reading = asyncio.get_running_loop().create_task(self._reload())

    async def _reload(self) -> None:
        try:
            await self.load()
        except Exception:
            logger.exception("product feed: reading the catalogue failed")
            return
        self._schedule()

    def _slug_of(self, page: str) -> str | None:
        if page not in self._product_of_page:
            slug = self._product_of_page[page] = product_of_page(page)
            if slug is not None:
                self._page_of_product[slug] = page
        slug = self._product_of_page[page]
        if slug is not None and slug not in self.sizes:
            self._missing()  # a product this node does not know yet
        return slug

    # -- input -----------------------------------------------------------------------------

    def attach(self, tracker: Tracker) -> None:
        """Follow `tracker`: its current `carts` rows, then its diffs (one step: no change
        between the two is missed)."""
        unsubscribe = tracker.subscribe(self.feed)
        self.feed({CARTS_TOPIC: (tracker.rows(CARTS_TOPIC), [])})
        self._detach = unsubscribe

    def feed(self, diff: dict[str, tuple[list[Any], list[Any]]]) -> None:
        changes = diff.get(CARTS_TOPIC)
        if changes is None:
            return
        self.presence.apply(*changes)
        pages, items = self.presence.take_changes()
        for page in pages:
            slug = self._slug_of(page)
            if slug is not None:
                self._dirty.add(slug)
        for item in items:
            slug = self._product_of_item.get(item)
            if slug is not None:
                self._dirty.add(slug)
            elif item > 0:
                self._missing()  # a size this node does not know yet
        if self._dirty:
            self._schedule()

    # -- pages -----------------------------------------------------------------------------

    def watch(self, page: str, send: Send) -> str | None:
        """Let the socket behind `send` follow its page's product: at the product's next
        flush (no sooner than the tracker's dispatch of the socket's own track, scheduled
        earlier) it gets the current numbers, then every change. Returns the product (None:
        not a product page)."""
        slug = self._slug_of(page)
        if slug is None:
            return None
        self._watchers[slug] += 1
        self._newcomers.setdefault(slug, []).append(send)
        self._dirty.add(slug)
        self._schedule()
        return slug

    def unwatch(self, slug: str, send: Send) -> None:
        newcomers = self._newcomers.get(slug, [])
        if send in newcomers:
            newcomers.remove(send)
        else:
            self.fanout.leave(topic_of(slug), send)
        self._watchers[slug] -= 1
        if not self._watchers[slug]:
            del self._watchers[slug]
            self._sent.pop(slug, None)
            self._newcomers.pop(slug, None)

    def message(self, slug: str) -> str:
        """The product's numbers on this node now, encoded."""
        presence = self.presence
        viewers = presence.viewers(self._page_of_product.get(slug, ""))
        in_carts = {str(i): n for i in self.sizes.get(slug, ()) if (n := presence.holders(i))}
        return json.dumps(
            {"type": "product_presence", "product": slug, "viewers": viewers, "in_carts": in_carts}
        )

    # -- output ----------------------------------------------------------------------------

    def _schedule(self) -> None:
        if self._flush_handle is not None:
            return
        loop = asyncio.get_running_loop()
        delay = self._last_flush + self.interval - loop.time()
        self._flush_handle = loop.call_later(max(0.0, delay), self._flush)

    def _flush(self) -> None:
        """Write each changed product's numbers to its pages on this node, encoded once;
        the pages that started watching since the last flush get them whether or not they
        changed (their first message), and join the product's topic."""
        self._flush_handle = None
        self._last_flush = asyncio.get_running_loop().time()
        dirty, self._dirty = self._dirty, set()
        for slug in dirty & self._watchers.keys():
            text = self.message(slug)
            if self._sent.get(slug) != text:
                self._sent[slug] = text
                self.fanout.deliver(topic_of(slug), text)
            for send in self._newcomers.pop(slug, ()):
                self.fanout.join(topic_of(slug), send, text)

    def close(self) -> None:
        if self._detach is not None:
            self._detach()
            self._detach = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None


async def _start_feed() -> ProductFeed:
    tracker = await process_tracker()
    feed = ProductFeed((await local_node()).fanout, settings.PRODUCT_PRESENCE_INTERVAL)
    await feed.load()
    feed.attach(tracker)
    return feed


_feed = PerLoop(_start_feed)


async def product_feed() -> ProductFeed:
    """This event loop's product feed (started on first use: the catalogue read, the
    process's tracker followed). Raises as `process_tracker()` does."""
    return await _feed.get()
