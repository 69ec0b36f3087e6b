"""Product presence across nodes: a shopper on node A's product page sees a shopper who opens
the same page on node B, and the size B puts in its cart; both nodes tell the same numbers,
each from its own tracker replica (nothing per socket crosses Redis)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.cluster.faults import SETTLE_SECONDS, Cluster, new_shopper
from tests.live_clients import Tab

pytestmark = pytest.mark.cluster

PAGE = "/products/city-sneaker-white/"
ENV = {"PRODUCT_PRESENCE_INTERVAL": "0.1"}


async def until_presence(tab: Tab, wanted: dict[str, Any], within: float = SETTLE_SECONDS):
    """Read the tab's messages until a product_presence with these numbers arrives."""
    deadline = time.monotonic() + within
    seen = None
    while time.monotonic() < deadline:
        try:
            _, message = await tab.next(max(0.05, deadline - time.monotonic()))
        except TimeoutError:
            break
        if message["type"] == "product_presence":
            seen = {k: message[k] for k in ("viewers", "in_carts")}
            if seen == wanted:
                return
    raise AssertionError(f"product presence {wanted} not seen; last {seen}")


async def test_a_viewer_on_one_node_sees_a_shopper_on_the_other(fault_cluster: Cluster) -> None:
    a, b = fault_cluster.node("a", ENV), fault_cluster.node("b", ENV)
    mine, theirs = await asyncio.gather(new_shopper(a), new_shopper(b))
    on_a = await mine.open_tab(a, PAGE)
    await until_presence(on_a, {"viewers": 1, "in_carts": {}})

    on_b = await theirs.open_tab(b, PAGE)
    await until_presence(on_b, {"viewers": 2, "in_carts": {}})
    await until_presence(on_a, {"viewers": 2, "in_carts": {}})

    item_id = (await asyncio.to_thread(theirs.item_ids, "high", PAGE))[0]
    await on_b.request({"type": "add_item", "item_id": item_id})
    await until_presence(on_a, {"viewers": 2, "in_carts": {str(item_id): 1}})
    await until_presence(on_b, {"viewers": 2, "in_carts": {str(item_id): 1}})

    await on_b.close()
    await until_presence(on_a, {"viewers": 1, "in_carts": {}})
