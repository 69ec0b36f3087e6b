"""Helpers shared by the dashboard tests: presence rows, a client-side diff applier and a
from-scratch recomputation of the aggregates (the oracle the incremental code must match)."""

import asyncio
from typing import Any, NamedTuple


class P(NamedTuple):
    """A presence row with the attributes of the tracker's `Presence`."""

    topic: str
    key: str
    conn: str
    meta: dict
    ref: str


def cart_meta(
    cart_id: str,
    *,
    page: str = "/",
    items: dict | None = None,
    user: str | None = None,
    joined_at: float = 1000.0,
    rev: int = 0,
) -> dict:
    return {
        "cart_id": cart_id,
        "page": page,
        "items": items or {},
        "user": user,
        "joined_at": joined_at,
        "rev": rev,
    }


def row(ref: str, cart_id: str, conn: str | None = None, **meta: Any) -> P:
    return P("carts", cart_id, conn or f"conn-{ref}", cart_meta(cart_id, **meta), ref)


def apply_stats_diff(stats: dict[str, Any], diff: dict[str, Any]) -> None:
    """Apply a `stats` diff to a snapshot's stats in place, as dashboard.js does."""
    for name in ("shoppers", "pages"):
        if name in diff:
            stats[name] = diff[name]
    for name in ("items", "pages_by_path"):
        for key, value in diff.get(name, {}).items():
            if value:
                stats[name][key] = value
            else:
                stats[name].pop(key, None)
    for cart_id, entry in diff.get("carts", {}).items():
        if entry is None:
            stats["carts"].pop(cart_id, None)
        else:
            stats["carts"][cart_id] = dict(entry)


def recompute(presences: list) -> dict[str, Any]:
    """The aggregates of docs/protocol.md computed from scratch over the visible rows."""
    by_cart: dict[str, list] = {}
    for presence in presences:
        by_cart.setdefault(presence.key, []).append(presence)
    items: dict[str, int] = {}
    paths: dict[str, int] = {}
    carts: dict[str, dict] = {}
    for presence in presences:
        paths[presence.meta["page"]] = paths.get(presence.meta["page"], 0) + 1
    for cart_id, rows in by_cart.items():
        newest = max(rows, key=lambda p: p.meta["rev"]).meta
        quantities = {str(k): q for k, q in newest["items"].items() if q > 0}
        for item_id, quantity in quantities.items():
            items[item_id] = items.get(item_id, 0) + quantity
        carts[cart_id] = {
            "user": newest["user"],
            "pages": len(rows),
            "items": sum(quantities.values()),
            "since": min(p.meta["joined_at"] for p in rows),
        }
    return {
        "shoppers": len(by_cart),
        "pages": len(presences),
        "items": items,
        "pages_by_path": paths,
        "carts": carts,
    }


async def settled(hub) -> None:
    """Wait until `hub` has sent every pending change (and its subscribers got it)."""
    for _ in range(400):
        if not hub.pending:
            await asyncio.sleep(0)
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the hub did not flush")
