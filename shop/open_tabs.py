"""This process's open shopper tabs by cart, kept in step through the tracker.

A change of a cart reaches its other tabs through the channel layer, which delivers at most
once: channels-redis can lose a message (one popped by a receive that was then cancelled,
say), and that tab would show a stale cart until the next change. But every tab also carries
its cart's revision in its tracker meta, which every node sees within a broadcast period.
So when the tracker shows a cart at a revision that one of our tabs still lacks a moment
later, that tab reloads its cart from the database: the tracker, which replicates every
page anyway, doubles as a repair path for cart contents.
"""

from __future__ import annotations

import weakref
from typing import Any, Protocol

from shop.presence import CARTS_TOPIC
from tracker import Tracker

# Seconds a tab waits for the channel layer to bring a revision the tracker already shows.
GRACE_SECONDS = 1.0


class Tab(Protocol):
    cart_id: str | None

    def expect(self, revision: int) -> None: ...


def _cart_of(tab: Tab) -> str:
    assert tab.cart_id is not None  # a tab is tracked, hence here, only once it has a cart
    return tab.cart_id


class OpenTabs:
    """The tabs of one tracker's process, by cart id; subscribed to that tracker's diffs."""

    def __init__(self) -> None:
        self.by_cart: dict[str, set[Tab]] = {}

    def add(self, tab: Tab) -> None:
        self.by_cart.setdefault(_cart_of(tab), set()).add(tab)

    def discard(self, tab: Tab) -> None:
        cart_id = _cart_of(tab)
        tabs = self.by_cart.get(cart_id)
        if tabs is not None:
            tabs.discard(tab)
            if not tabs:
                del self.by_cart[cart_id]

    def on_diff(self, diff: dict[str, tuple[list[Any], list[Any]]]) -> None:
        """Tell our tabs of every cart revision that joined (a tab's meta update)."""
        changes = diff.get(CARTS_TOPIC)
        if changes is None:
            return
        for row in changes[0]:
            tabs = self.by_cart.get(row.key)
            if tabs:
                revision = row.meta.get("rev", 0)
                for tab in tabs:
                    tab.expect(revision)


_by_tracker: weakref.WeakKeyDictionary[Tracker, OpenTabs] = weakref.WeakKeyDictionary()


def open_tabs(tracker: Tracker) -> OpenTabs:
    """The open tabs following `tracker` (created and subscribed on first use)."""
    tabs = _by_tracker.get(tracker)
    if tabs is None:
        tabs = _by_tracker[tracker] = OpenTabs()
        tracker.subscribe(tabs.on_diff)
    return tabs
