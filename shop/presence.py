"""The cart presence: what every open storefront page tells the tracker (docs/protocol.md).

Each shopper connection is tracked on topic `carts` under its cart id, with a meta that
the staff dashboard aggregates. `rev` is the cart's revision: rows of one cart with the
same rev hold the same items, and the highest rev holds the newest.
"""

from __future__ import annotations

from typing import Any

from shop.carts import CartSnapshot

CARTS_TOPIC = "carts"


def cart_meta(
    cart: CartSnapshot, *, page: str, user: str | None, joined_at: float
) -> dict[str, Any]:
    return {
        "cart_id": cart["id"],
        "page": page,
        "items": {line["item_id"]: line["quantity"] for line in cart["items"]},
        "user": user,
        "joined_at": joined_at,
        "rev": cart["revision"],
    }
