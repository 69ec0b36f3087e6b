"""A node frozen (SIGSTOP) for longer than down_period while shoppers come and go on the
other, then resumed (SIGCONT), several times over: a stopped process is what a long
collector pause, a swapped-out VM or a debugger looks like to its peers. Each side takes the
other for down meanwhile; once both run again, every live staff view and a fresh snapshot
on each node must equal the truth, and stay so (issue 9).

Real daphne processes and Redis; timings in tests/cluster/faults.py (down 1.0 s).
"""

from __future__ import annotations

import asyncio
import random
import signal

import pytest

from tests.cluster.faults import (
    DOWN_PERIOD,
    SETTLE_SECONDS,
    Cluster,
    new_shopper,
    open_staff,
    replica_names,
    stays_exact,
    until_exact,
)
from tests.live_clients import Tab

pytestmark = pytest.mark.cluster

ROUNDS = 3
FROZEN_SECONDS = 2.5 * DOWN_PERIOD


async def test_a_frozen_node_comes_back_and_every_view_tells_the_truth(
    fault_cluster: Cluster,
) -> None:
    a, b = fault_cluster.node("a"), fault_cluster.node("b")
    _, view_a = await open_staff(a)
    _, view_b = await open_staff(b)
    rng = random.Random(9)
    shopper_a, shopper_b = await asyncio.gather(new_shopper(a), new_shopper(b))
    item_ids = await asyncio.to_thread(shopper_b.item_ids, "high")
    tabs: list[Tab] = [await shopper_a.open_tab(a, "/a/"), await shopper_b.open_tab(b, "/b/")]
    on_b = [tabs[1]]  # the tabs on b, which come and go while a is frozen
    await tabs[0].request({"type": "add_item", "item_id": item_ids[0]})
    await until_exact(view_b, tabs, SETTLE_SECONDS, "the first shoppers on b")

    for round_ in range(ROUNDS):
        a.process.send_signal(signal.SIGSTOP)
        try:
            # Shoppers come and go on b while a is frozen: b takes a for down on the way.
            loop = asyncio.get_running_loop()
            until = loop.time() + FROZEN_SECONDS
            while loop.time() < until:
                roll = rng.random()
                if roll < 0.4 or not on_b:
                    shopper = await new_shopper(b)
                    tab = await shopper.open_tab(b, f"/r{round_}/")
                    await tab.request({"type": "add_item", "item_id": rng.choice(item_ids)})
                    tabs.append(tab)
                    on_b.append(tab)
                elif roll < 0.7:
                    gone = rng.choice(on_b)
                    await gone.close()
                    tabs.remove(gone)
                    on_b.remove(gone)
                else:
                    tab = rng.choice(on_b)
                    await tab.request({"type": "add_item", "item_id": rng.choice(item_ids)})
                await asyncio.sleep(0.1)
            await view_b.until(
                lambda v: replica_names(v).get("a") == "down", SETTLE_SECONDS, "a down on b"
            )
        finally:
            a.process.send_signal(signal.SIGCONT)

        # Both run again: every view converges to the truth and stays there.
        for view in (view_a, view_b):
            await until_exact(view, tabs, SETTLE_SECONDS, f"round {round_}: {view.node}")
        await view_b.until(
            lambda v: replica_names(v) == {"a": "up", "b": "up"}, SETTLE_SECONDS, "a up on b"
        )
        await view_a.until(
            lambda v: replica_names(v) == {"a": "up", "b": "up"}, SETTLE_SECONDS, "b up on a"
        )
        _, fresh_a = await open_staff(a)
        _, fresh_b = await open_staff(b)
        await stays_exact([view_a, view_b, fresh_a, fresh_b], tabs, 2 * DOWN_PERIOD)
        await fresh_a.close()
        await fresh_b.close()
