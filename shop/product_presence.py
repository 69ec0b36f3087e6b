"""What shoppers may see of each other on a product page: how many carts view it, and how
many online carts hold each size (docs/protocol.md, `product_presence`). Counts only.

Pure: no I/O, no asyncio. Folds the tracker's diffs of the `carts` topic (each
row a shopper page, its meta the cart presence of shop/presence.py) in O(change), as the
staff dashboard's aggregator does:

- `viewers(page)`: distinct carts with `page` open (a cart open twice on it counts once);
- `holders(item_id)`: distinct online carts holding that item, by the items of each cart's
  newest revision (the row with the highest `rev`, ties to the latest joined).

`take_changes()` returns the pages and items whose numbers changed since the last take.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from shop.presence import CartRow, newest


@dataclass(frozen=True, slots=True)
class _Row:
    cart_id: str
    page: str
    rev: int
    items: frozenset[int]  # item ids held (quantity > 0)


@dataclass(slots=True)
class _Cart:
    rows: dict[str, _Row] = field(default_factory=dict)  # ref -> row, in join order
    pages: Counter[str] = field(default_factory=Counter)  # its open pages
    items: frozenset[int] = frozenset()  # its newest revision's items


def _row(presence: CartRow) -> _Row:
    meta = presence.meta
    items = frozenset(
        int(item_id) for item_id, quantity in (meta.get("items") or {}).items() if quantity
    )
    return _Row(presence.key, str(meta.get("page") or ""), int(meta.get("rev") or 0), items)


class ProductPresence:
    def __init__(self) -> None:
        self._rows: dict[str, _Row] = {}
        self._carts: dict[str, _Cart] = {}
        self._viewers: Counter[str] = Counter()
        self._holders: Counter[int] = Counter()
        self._changed_pages: set[str] = set()
        self._changed_items: set[int] = set()

    def viewers(self, page: str) -> int:
        return self._viewers[page]

    def holders(self, item_id: int) -> int:
        return self._holders[item_id]

    def apply(self, joins: Iterable[CartRow], leaves: Iterable[CartRow]) -> None:
        """Fold in one tracker diff of the `carts` topic (joins and leaves disjoint; a leave
        of an unknown row and a second join of a known one change nothing)."""
        touched: dict[str, frozenset[int]] = {}  # cart -> its items before this diff
        for presence in leaves:
            row = self._rows.pop(presence.ref, None)
            if row is None:
                continue
            cart = self._carts[row.cart_id]
            touched.setdefault(row.cart_id, cart.items)
            del cart.rows[presence.ref]
            self._page(cart, row.page, -1)
        for presence in joins:
            if presence.ref in self._rows:
                continue
            row = self._rows[presence.ref] = _row(presence)
            cart = self._carts.setdefault(row.cart_id, _Cart())
            touched.setdefault(row.cart_id, cart.items)
            cart.rows[presence.ref] = row
            self._page(cart, row.page, 1)
        for cart_id, before in touched.items():
            cart = self._carts[cart_id]
            if cart.rows:
                cart.items = newest(cart.rows.values()).items
            else:
                del self._carts[cart_id]
                cart.items = frozenset()
            for item_id in before ^ cart.items:
                self._holders[item_id] += 1 if item_id in cart.items else -1
                if not self._holders[item_id]:
                    del self._holders[item_id]
                self._changed_items.add(item_id)

    def _page(self, cart: _Cart, page: str, delta: int) -> None:
        count = cart.pages[page] + delta
        if count:
            cart.pages[page] = count
        else:
            del cart.pages[page]
        if count == (1 if delta > 0 else 0):  # the cart's first tab on it, or its last
            self._viewers[page] += delta
            if not self._viewers[page]:
                del self._viewers[page]
            self._changed_pages.add(page)

    def take_changes(self) -> tuple[set[str], set[int]]:
        """The pages and items whose numbers changed (or may have) since the last take."""
        changes = self._changed_pages, self._changed_items
        self._changed_pages, self._changed_items = set(), set()
        return changes
