"""The per-product numbers shoppers see (shop/product_presence.py) equal a recomputation
from the rows, after every batch of random joins, leaves and updates."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shop.product_presence import ProductPresence

PAGES = ["/products/a/", "/products/b/", "/", "/checkout/"]


@dataclass(frozen=True)
class Row:
    key: str
    meta: dict[str, Any]
    ref: str


def recompute(rows: list[Row]) -> tuple[dict[str, int], dict[int, int]]:
    carts: dict[str, list[Row]] = {}
    for row in rows:  # in join order
        carts.setdefault(row.key, []).append(row)
    viewers: dict[str, int] = {}
    holders: dict[int, int] = {}
    for cart_rows in carts.values():
        for page in {row.meta["page"] for row in cart_rows}:
            viewers[page] = viewers.get(page, 0) + 1
        newest = max(enumerate(cart_rows), key=lambda p: (p[1].meta["rev"], p[0]))[1]
        for item_id, quantity in newest.meta["items"].items():
            if quantity:
                holders[item_id] = holders.get(item_id, 0) + 1
    return viewers, holders


change = st.tuples(
    st.sampled_from(["join", "leave", "update"]),
    st.integers(0, 5),  # cart
    st.sampled_from(PAGES),
    st.dictionaries(st.integers(1, 4), st.integers(0, 2), max_size=3),
    st.integers(0, 3),  # rev
    st.integers(0, 10**6),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(change, min_size=1, max_size=6), max_size=30))
def test_numbers_equal_a_recomputation_after_every_batch(batches):
    presence = ProductPresence()
    live: list[Row] = []
    refs = itertools.count()
    for batch in batches:
        joins, leaves = [], []
        for kind, cart, page, items, rev, pick in batch:
            if kind != "join" and live:
                old = live.pop(pick % len(live))
                if old in joins:
                    joins.remove(old)  # joined and left within the batch: neither
                else:
                    leaves.append(old)
                if kind == "leave":
                    continue
                cart, page = int(old.key[1:]), old.meta["page"]
            row = Row(f"c{cart}", {"page": page, "items": items, "rev": rev}, f"r{next(refs)}")
            live.append(row)
            joins.append(row)
        presence.apply(joins, leaves)
        viewers, holders = recompute(live)
        assert {p: presence.viewers(p) for p in PAGES} == {p: viewers.get(p, 0) for p in PAGES}
        assert {i: presence.holders(i) for i in range(1, 5)} == {
            i: holders.get(i, 0) for i in range(1, 5)
        }


def test_changes_name_what_moved_once_per_take():
    presence = ProductPresence()
    tab = Row("c1", {"page": "/products/a/", "items": {1: 2}, "rev": 1}, "r1")
    presence.apply([tab], [])
    assert presence.take_changes() == ({"/products/a/"}, {1})
    second = Row("c1", {"page": "/products/a/", "items": {1: 2}, "rev": 1}, "r2")
    presence.apply([second], [])  # the same cart in a second tab: nothing moves
    assert presence.viewers("/products/a/") == 1
    assert presence.take_changes() == (set(), set())
    presence.apply([], [tab, second])
    assert presence.take_changes() == ({"/products/a/"}, {1})
    assert presence.viewers("/products/a/") == 0 and presence.holders(1) == 0
