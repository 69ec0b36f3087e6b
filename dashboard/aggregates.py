"""Fold the tracker's presence diffs for the `carts` topic into the dashboard's aggregates.

Pure: no I/O, no asyncio, no clock. Definitions (docs/protocol.md):

- `shoppers`: distinct cart ids online;
- `pages`: tracked connections;
- `items`: {"<item_id>": total quantity over distinct online carts} (a cart open in three
  tabs counts once);
- `pages_by_path`: {"<path>": connections on that page};
- `carts` (extra, for the shoppers table): {"<cart_id>": {"user", "pages", "items", "since"}}.

A cart's contribution comes from its row with the highest `rev` (the cart revision the
storefront puts in every tab's meta; a tab not yet updated still carries an older one). Ties
go to the most recently joined row, so a storefront that sends no `rev` still converges.

The cost of a change is proportional to the change: a row join or leave touches its own
cart (whose rows are that cart's open tabs) and the items of that cart, never the other
presences.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from shop.presence import CartRow, newest


@dataclass(frozen=True, slots=True)
class _Row:
    cart_id: str
    page: str
    rev: int
    items: dict[str, int]
    user: str | None
    joined_at: float | None


@dataclass(slots=True)
class _Cart:
    rows: dict[str, _Row] = field(default_factory=dict)  # ref -> row, in join order
    items: dict[str, int] = field(default_factory=dict)  # this cart's current contribution
    entry: dict[str, Any] | None = None  # its line in `carts`; replaced, never mutated


def _row(presence: CartRow) -> _Row:
    meta = presence.meta
    items: dict[str, int] = {}
    for item_id, quantity in (meta.get("items") or {}).items():
        if int(quantity) > 0:
            items[str(item_id)] = int(quantity)
    joined_at = meta.get("joined_at")
    return _Row(
        cart_id=presence.key,
        page=str(meta.get("page") or ""),
        rev=int(meta.get("rev") or 0),
        items=items,
        user=meta.get("user"),
        joined_at=float(joined_at) if joined_at is not None else None,
    )


class Aggregator:
    """Aggregates of the `carts` presences, kept incrementally, with coalesced diffs.

    `apply()` folds one tracker diff in. `take_diff()` returns what changed since the last
    take (absolute values; 0 in `items`/`pages_by_path` and None in `carts` mean gone).
    `snapshot()` returns the current aggregates. Applying every diff taken after a snapshot
    to that snapshot gives `snapshot()` again, provided the snapshot itself was taken with
    no changes pending (`pending` is False): a diff omits a key whose value came back to
    where it was at the last take, which a snapshot taken in between would have missed.
    """

    def __init__(self) -> None:
        self._rows: dict[str, _Row] = {}  # ref -> row
        self._carts: dict[str, _Cart] = {}
        self._items: dict[str, int] = {}
        self._paths: dict[str, int] = {}
        # Values as of the last take, recorded for the keys touched since.
        self._base_shoppers = 0
        self._base_pages = 0
        self._base_items: dict[str, int] = {}
        self._base_paths: dict[str, int] = {}
        self._base_carts: dict[str, dict[str, Any] | None] = {}

    @property
    def shoppers(self) -> int:
        return len(self._carts)

    @property
    def pages(self) -> int:
        return len(self._rows)

    @property
    def pending(self) -> bool:
        """Whether anything was applied since the last take (it may still net to no diff)."""
        # Every row join or leave touches a path, and every cart that comes or goes its entry.
        return bool(self._base_items or self._base_paths or self._base_carts)

    def apply(self, joins: Iterable[CartRow], leaves: Iterable[CartRow]) -> None:
        """Fold in one tracker diff of the `carts` topic.

        Joins and leaves of one diff are disjoint sets of refs, so leaves go first. A leave
        of an unknown ref or a second join of a known one changes nothing.
        """
        touched: set[str] = set()
        for presence in leaves:
            row = self._rows.pop(presence.ref, None)
            if row is None:
                continue
            del self._carts[row.cart_id].rows[presence.ref]
            self._add(self._paths, self._base_paths, row.page, -1)
            touched.add(row.cart_id)
        for presence in joins:
            if presence.ref in self._rows:
                continue
            row = _row(presence)
            self._rows[presence.ref] = row
            self._carts.setdefault(row.cart_id, _Cart()).rows[presence.ref] = row
            self._add(self._paths, self._base_paths, row.page, 1)
            touched.add(row.cart_id)
        for cart_id in touched:
            self._refresh_cart(cart_id)

    def _refresh_cart(self, cart_id: str) -> None:
        cart = self._carts[cart_id]
        old_items, old_entry = cart.items, cart.entry
        if cart.rows:
            latest = newest(cart.rows.values())
            since = [row.joined_at for row in cart.rows.values() if row.joined_at is not None]
            cart.items = latest.items
            cart.entry = {
                "user": latest.user,
                "pages": len(cart.rows),
                "items": sum(latest.items.values()),
                "since": min(since) if since else None,
            }
        else:
            del self._carts[cart_id]
            cart.items, cart.entry = {}, None
        if cart.items is not old_items:
            for item_id in old_items.keys() | cart.items.keys():
                delta = cart.items.get(item_id, 0) - old_items.get(item_id, 0)
                if delta:
                    self._add(self._items, self._base_items, item_id, delta)
        if cart.entry != old_entry:
            self._base_carts.setdefault(cart_id, old_entry)

    @staticmethod
    def _add(counts: dict[str, int], base: dict[str, int], key: str, delta: int) -> None:
        old = counts.get(key, 0)
        base.setdefault(key, old)
        if old + delta:
            counts[key] = old + delta
        else:
            del counts[key]

    def take_diff(self) -> dict[str, Any] | None:
        """What changed since the last take, or None; the next take starts from here."""
        diff: dict[str, Any] = {}
        if self.shoppers != self._base_shoppers:
            diff["shoppers"] = self.shoppers
        if self.pages != self._base_pages:
            diff["pages"] = self.pages
        for name, counts, base in (
            ("items", self._items, self._base_items),
            ("pages_by_path", self._paths, self._base_paths),
        ):
            changed = {k: counts.get(k, 0) for k, old in base.items() if counts.get(k, 0) != old}
            if changed:
                diff[name] = changed
        carts = {}
        for cart_id, old in self._base_carts.items():
            cart = self._carts.get(cart_id)
            entry = cart.entry if cart is not None else None
            if entry != old:
                carts[cart_id] = entry
        if carts:
            diff["carts"] = carts
        self._base_shoppers, self._base_pages = self.shoppers, self.pages
        self._base_items, self._base_paths, self._base_carts = {}, {}, {}
        return diff or None

    def snapshot(self) -> dict[str, Any]:
        """The current aggregates (fresh containers the caller may keep or change)."""
        return {
            "shoppers": self.shoppers,
            "pages": self.pages,
            "items": dict(self._items),
            "pages_by_path": dict(self._paths),
            "carts": {  # (every cart kept has rows, hence an entry)
                cart_id: dict(cart.entry)
                for cart_id, cart in self._carts.items()
                if cart.entry is not None
            },
        }
