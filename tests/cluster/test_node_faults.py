"""A node of a two-node cluster dies (kill -9) or is stopped (SIGTERM) while it holds shoppers:
the staff view on the other node drops exactly those shoppers, within the time the tracker
promises, and nothing else (issue 5, fault tests 1 and 2).

Real daphne processes and Redis; timings in tests/cluster/faults.py: broadcast 0.05 s,
down 1.0 s, permdown 120 s (never reached), staff diffs every 0.05 s at most.

The shoppers: one cart with a tab on each node (it must stay, counted once, when A goes),
one cart with two tabs on A, one cart on B; items in all three.
"""

from __future__ import annotations

import asyncio
import signal
import time

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
from tests.daphne_server import DaphneServer
from tests.live_clients import StaffClient, Tab, truth_of

pytestmark = pytest.mark.cluster

# The hub asks its tracker for the replicas' status once a second (dashboard.hub).
REPLICA_POLL_SECONDS = 1.0


async def change(tab: Tab, kind: str, item_id: int, tabs: list[Tab]) -> None:
    """Add or remove an item in `tab`'s cart; wait until every other tab of it shows it."""
    await tab.request({"type": kind, "item_id": item_id})
    for other in tabs:
        if other is not tab and other.cart_id == tab.cart_id:
            await other.until_items(tab.items, SETTLE_SECONDS)


async def shoppers_on(a: DaphneServer, b: DaphneServer) -> tuple[list[Tab], list[Tab]]:
    """The shoppers of the module docstring: (tabs on A, tabs on B)."""
    one, two, three = await asyncio.gather(new_shopper(a), new_shopper(a), new_shopper(b))
    first, second = (await asyncio.to_thread(one.item_ids, "high"))[:2]
    one_a = await one.open_tab(a, "/x/")
    one_b = await one.open_tab(b, "/y/")
    two_x = await two.open_tab(a, "/x/")
    two_z = await two.open_tab(a, "/z/")
    three_b = await three.open_tab(b, "/z/")
    tabs = [one_a, one_b, two_x, two_z, three_b]
    await change(one_a, "add_item", first, tabs)
    await change(one_b, "add_item", second, tabs)
    await change(two_z, "add_item", second, tabs)
    await change(three_b, "add_item", first, tabs)
    await change(three_b, "add_item", first, tabs)
    return [one_a, two_x, two_z], [one_b, three_b]


async def cluster_watched_from_b(
    fault_cluster: Cluster,
) -> tuple[DaphneServer, DaphneServer, StaffClient, list[Tab], list[Tab]]:
    a, b = fault_cluster.node("a"), fault_cluster.node("b")
    _, view = await open_staff(b)
    on_a, on_b = await shoppers_on(a, b)
    await until_exact(view, on_a + on_b, SETTLE_SECONDS, "every shopper on both nodes")
    await view.until(
        lambda v: replica_names(v) == {"a": "up", "b": "up"}, SETTLE_SECONDS, "a and b up"
    )
    assert truth_of(on_a + on_b)["shoppers"] == 3
    return a, b, view, on_a, on_b


async def test_kill_9_a_node_its_shoppers_leave_the_other_nodes_view_within_down_period(
    fault_cluster: Cluster,
) -> None:
    """SIGKILL: no goodbye, the sockets just drop. B hears nothing more from A, so after
    `down_period` of silence (checked every broadcast period) A is down and its rows are
    hidden: measured from the kill, at most down_period + one period (+ scheduling
    tolerance), and not long before down_period (A was not announced gone: it went
    silent)."""
    a, b, view, on_a, on_b = await cluster_watched_from_b(fault_cluster)

    killed = time.perf_counter()
    a.kill()
    dropped = await until_exact(view, on_b, SETTLE_SECONDS, "only B's shoppers")
    took = dropped - killed
    print(f"kill -9: A's shoppers left B's staff view {took:.3f} s after the kill")
    bound = DOWN_PERIOD + BROADCAST_PERIOD + SCHEDULING_TOLERANCE
    assert took <= bound, f"A's shoppers left B's view {took:.3f} s after the kill (> {bound})"
    # B last heard A about one silent-heartbeat gap (0.25 s) before the kill at most; half
    # of down_period leaves room for a slow heartbeat and still tells a down detection from
    # an early leave (which a killed node cannot send).
    assert took >= DOWN_PERIOD / 2, f"A's rows left {took:.3f} s after the kill: not by silence"
    for tab in on_a:
        await tab.abort()

    # A is down, not forgotten: it may come back until permdown (120 s, far away).
    await view.until(
        lambda v: replica_names(v) == {"a": "down", "b": "up"},
        REPLICA_POLL_SECONDS + SCHEDULING_TOLERANCE + BROADCAST_PERIOD,
        "a down",
    )
    # No ghosts: the numbers stay exact, B's shoppers keep shopping (one of them shares
    # its cart with a tab that died with A: that cart is counted once, with one page) and
    # a staff view opened now gets the same from its snapshot.
    await stays_exact([view], on_b, 2 * DOWN_PERIOD)
    one_b, three_b = on_b
    item_id = int(next(iter(three_b.items)))
    await change(one_b, "add_item", item_id, on_b)
    await change(three_b, "remove_item", item_id, on_b)
    await until_exact(view, on_b, SETTLE_SECONDS, "B's shoppers' changes")
    _, fresh = await open_staff(b)
    await stays_exact([view, fresh], on_b, DOWN_PERIOD)


async def test_sigterm_a_node_its_shoppers_leave_the_other_nodes_view_within_one_period(
    fault_cluster: Cluster,
) -> None:
    """SIGTERM: daphne's shutdown runs the tracker's before-shutdown trigger, which says
    goodbye; B purges A's rows as soon as the goodbye arrives: measured from the signal, at
    most one broadcast period (+ scheduling tolerance), far below down_period. A is then
    forgotten by B (not merely down), and its rows never come back."""
    a, b, view, on_a, on_b = await cluster_watched_from_b(fault_cluster)

    termed = time.perf_counter()
    a.process.send_signal(signal.SIGTERM)
    left = await until_exact(view, on_b, SETTLE_SECONDS, "only B's shoppers")
    took = left - termed
    print(f"SIGTERM: A's shoppers left B's staff view {took:.3f} s after the signal")
    bound = BROADCAST_PERIOD + SCHEDULING_TOLERANCE
    assert took <= bound, f"A's shoppers left B's view {took:.3f} s after SIGTERM (> {bound})"
    exit_code = await asyncio.to_thread(a.process.wait, 10)
    assert exit_code == 0, a.logs()
    a.stop()  # (it has exited: only forgets the process)
    for tab in on_a:
        await tab.abort()

    assert "said goodbye" in b.logs(), b.logs()
    await view.until(
        lambda v: replica_names(v) == {"b": "up"},
        REPLICA_POLL_SECONDS + SCHEDULING_TOLERANCE + BROADCAST_PERIOD,
        "a forgotten",
    )
    # Longer than down_period: nothing about A may happen any more.
    await stays_exact([view], on_b, 2 * DOWN_PERIOD)
