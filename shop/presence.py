"""The cart presence: what every open storefront page tells the tracker (docs/protocol.md).

Each shopper connection is tracked on topic `carts` under its cart id, with a meta that
the staff dashboard aggregates. `rev` is the cart's revision: rows of one cart with the
same rev hold the same items, and the highest rev holds the newest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, TypeVar

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


class CartRow(Protocol):
    """A row of the `carts` topic as its readers (the staff aggregator, the shoppers'
    product presence) see it: a tracker `Presence`, or anything shaped like one."""

    @property
    def key(self) -> str: ...
    @property
    def meta(self) -> Mapping[str, Any]: ...
    @property
    def ref(self) -> str: ...


class _Revised(Protocol):
    @property
    def rev(self) -> int: ...


R = TypeVar("R", bound=_Revised)


def newest(rows: Iterable[R]) -> R:
    """The row of a cart's newest revision (its items are the cart's); among equals, the
    one that joined last (rows come in join order)."""
    best: R | None = None
    for row in rows:
        if best is None or row.rev >= best.rev:
            best = row
    assert best is not None, "a cart online has a row"
    return best
