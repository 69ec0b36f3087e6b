"""A network partition between two nodes' trackers, and its healing (issue 5, fault test 4).

How the partition is made: node A's tracker reaches Redis through a TCP proxy
(`TRACKER_REDIS_URL`, tests/cluster/tcp_proxy.py) while its channel layer and B's tracker
talk to Redis directly; cutting the proxy partitions the two trackers and nothing else.
Both nodes keep serving their shoppers (their sockets, the database and the channel layer
work), so both sides change during the partition and each must learn the other's changes
when it heals: a real split-brain, not a paused process. Two kinds of cut, as networks
fail: "reset" drops A's connections and refuses new ones (A's transport sees the loss and
reconnects with backoff, capped at 2 s), "stall" keeps them open and silently holds every
byte until the heal (A notices nothing but silence; late messages arrive in order).

Expected: after down_period of silence each side marks the other down and shows exactly
its own shoppers; after healing, A comes back with the same replica id and both staff
views show every shopper exactly once: no ghosts, no duplicates, for good.

Timings: broadcast 0.05 s, down 1.0 s, permdown 120 s, staff diffs 0.05 s
(tests/cluster/faults.py). The partition lasts 3 s (three down periods).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests.cluster.faults import (
    BROADCAST_PERIOD,
    DOWN_PERIOD,
    SCHEDULING_TOLERANCE,
    SETTLE_SECONDS,
    Cluster,
    new_shopper,
    open_staff,
    replica_names,
    stays_exact,
    until_exact,
)
from tests.cluster.tcp_proxy import TcpProxy
from tests.live_clients import Tab

pytestmark = pytest.mark.cluster

PARTITION_SECONDS = 3.0
# The tracker's Redis reader retries with a backoff doubling from 0.05 s up to 2 s.
RECONNECT_BACKOFF_CAP = 2.0
REPLICA_POLL_SECONDS = 1.0  # the hub's poll of the replicas' status


@pytest.fixture
def proxy(fault_cluster: Cluster) -> Iterator[TcpProxy]:
    proxy = TcpProxy(fault_cluster.redis.port).start()
    try:
        yield proxy
    finally:
        proxy.stop()


async def add(tab: Tab, item_id: int, *others: Tab) -> None:
    await tab.request({"type": "add_item", "item_id": item_id})
    for other in others:
        await other.until_items(tab.items, SETTLE_SECONDS)


@pytest.mark.parametrize("cut", ["reset", "stall"])
async def test_a_partition_between_two_nodes_heals_into_exact_counts_on_both(
    fault_cluster: Cluster, proxy: TcpProxy, cut: str
) -> None:
    a = fault_cluster.node("a", env={"TRACKER_REDIS_URL": proxy.url})
    b = fault_cluster.node("b")
    staff, view_a = await open_staff(a)
    _, view_b = await open_staff(b, staff)
    views = (view_a, view_b)

    one, two, three = await asyncio.gather(new_shopper(a), new_shopper(a), new_shopper(b))
    first, second, third = (await asyncio.to_thread(one.item_ids, "high"))[:3]
    one_a, one_b = await one.open_tab(a, "/x/"), await one.open_tab(b, "/y/")  # one cart
    two_a, three_b = await two.open_tab(a, "/x/"), await three.open_tab(b, "/z/")
    await add(one_a, first, one_b)
    await add(two_a, second)
    await add(three_b, first)
    on_a, on_b = [one_a, two_a], [one_b, three_b]
    for view in views:
        await until_exact(view, on_a + on_b, SETTLE_SECONDS, "every shopper")
        await view.until(
            lambda v: replica_names(v) == {"a": "up", "b": "up"}, SETTLE_SECONDS, "both up"
        )
    a_replica = view_a.node

    # -- the partition: each side sees only its own shoppers after down_period ---------------
    cut_at = time.perf_counter()
    proxy.cut(cut)
    alone = await asyncio.gather(
        until_exact(view_a, on_a, SETTLE_SECONDS, "only A's shoppers, A cut off"),
        until_exact(view_b, on_b, SETTLE_SECONDS, "only B's shoppers, A cut off"),
    )
    took = max(alone) - cut_at
    print(f"partition ({cut}): each side dropped the other's shoppers {took:.3f} s after the cut")
    bound = DOWN_PERIOD + BROADCAST_PERIOD + SCHEDULING_TOLERANCE
    assert took <= bound, f"the other side's shoppers were shown {took:.3f} s (> {bound})"
    for view, other in ((view_a, "b"), (view_b, "a")):
        await view.until(
            lambda v, other=other: replica_names(v)[other] == "down",
            REPLICA_POLL_SECONDS + SCHEDULING_TOLERANCE,
            f"{other} down",
        )

    # Both sides change while cut off (the channel layer still carries cart changes across).
    await add(one_b, second, one_a)  # made on B, shown in one's tab on A, tracked by A
    two_z = await two.open_tab(a, "/z/")
    four = await new_shopper(a)
    four_a = await four.open_tab(a, "/")
    await add(four_a, third)
    await three_b.close()
    five = await new_shopper(b)
    five_b = await five.open_tab(b, "/x/")
    await add(five_b, third)
    on_a, on_b = [one_a, two_a, two_z, four_a], [one_b, five_b]
    await until_exact(view_a, on_a, SETTLE_SECONDS, "A's side during the partition")
    await until_exact(view_b, on_b, SETTLE_SECONDS, "B's side during the partition")
    await asyncio.sleep(PARTITION_SECONDS - (time.perf_counter() - cut_at))

    # -- healing ---------------------------------------------------------------------------
    healed_at = time.perf_counter()
    proxy.heal()
    together = await asyncio.gather(
        *(until_exact(view, on_a + on_b, SETTLE_SECONDS, "every shopper, healed") for view in views)
    )
    took = max(together) - healed_at
    print(f"partition ({cut}): both staff views exact {took:.3f} s after the heal")
    # A reset partition: A's next reconnect attempt comes within the backoff cap; then a
    # heartbeat each way and a transfer each way (the peer is behind: it asks).
    bound = RECONNECT_BACKOFF_CAP + 4 * BROADCAST_PERIOD + SCHEDULING_TOLERANCE
    assert took <= bound, f"converged {took:.3f} s after the heal (> {bound})"
    for view in views:
        await view.until(
            lambda v: replica_names(v) == {"a": "up", "b": "up"},
            REPLICA_POLL_SECONDS + SCHEDULING_TOLERANCE,
            "both up again",
        )
    assert view_a.node == a_replica and a_replica in view_b.replicas  # the same identity
    if cut == "reset":
        assert proxy.connections_refused > 0  # A kept trying while it was cut off
        assert "reconnected to redis://" in a.logs(500)
    # No ghost of the shopper who left, nobody twice (one's cart spans both nodes).
    _, fresh_b = await open_staff(b, staff)
    await stays_exact([*views, fresh_b], on_a + on_b, 2 * DOWN_PERIOD)
