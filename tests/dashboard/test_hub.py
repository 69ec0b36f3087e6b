"""The hub: coalescing, fan-out to its own subscribers only, snapshot + diffs == truth.

A real hub fed directly, as the tracker's callback would feed it (the tracker itself is
wired and tested elsewhere)."""

import asyncio
import copy
import random

from dashboard.hub import HISTORY_SECONDS, DashboardHub

from .support import apply_stats_diff, recompute, row, settled

INTERVAL = 0.05


def drain(queue: asyncio.Queue) -> list[dict]:
    messages = []
    while not queue.empty():
        messages.append(queue.get_nowait())
    return messages


async def test_a_new_subscriber_gets_a_snapshot_at_once_when_nothing_is_pending():
    hub = DashboardHub(INTERVAL)
    queue = hub.register()
    [snapshot] = drain(queue)
    assert snapshot["type"] == "snapshot"
    assert snapshot["stats"]["shoppers"] == 0
    assert snapshot["node"] is None
    assert snapshot["replicas"] == {}
    hub.close()


async def test_first_change_after_a_quiet_spell_goes_out_within_the_loop_iteration():
    hub = DashboardHub(INTERVAL)
    queue = hub.register()
    drain(queue)
    hub.feed({"carts": ([row("r1", "cart-a")], [])})
    hub.feed({"carts": ([row("r2", "cart-b")], [])})
    await asyncio.sleep(0)
    [diff] = drain(queue)
    assert diff["type"] == "diff"
    assert diff["stats"]["shoppers"] == 2  # one diff for both changes
    hub.close()


async def test_at_most_one_diff_per_interval():
    loop = asyncio.get_running_loop()
    hub = DashboardHub(INTERVAL, clock=loop.time)
    queue = hub.register()
    drain(queue)
    started = loop.time()
    for i in range(60):
        hub.feed({"carts": ([row(f"r{i}", f"cart-{i}")], [])})
        await asyncio.sleep(INTERVAL / 10)
    await settled(hub)
    elapsed = loop.time() - started
    diffs = drain(queue)
    times = [diff["t"] for diff in diffs]
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert min(gaps) >= INTERVAL * 0.99
    assert len(diffs) <= elapsed / INTERVAL + 1
    assert len(diffs) >= 3  # and it did not hold everything back either
    assert diffs[-1]["stats"]["shoppers"] == 60
    hub.close()


async def test_diffs_reach_only_registered_subscribers_of_this_hub():
    hub, other_node = DashboardHub(INTERVAL), DashboardHub(INTERVAL)
    staying, leaving, elsewhere = hub.register(), hub.register(), other_node.register()
    for queue in (staying, leaving, elsewhere):
        drain(queue)
    hub.unregister(leaving)
    assert hub.subscriber_count == 1
    hub.feed({"carts": ([row("r1", "cart-a")], [])})
    await settled(hub)
    assert [m["type"] for m in drain(staying)] == ["diff"]
    assert drain(leaving) == []
    assert drain(elsewhere) == []
    hub.close()
    other_node.close()


async def test_a_snapshot_waits_for_the_pending_diff():
    hub = DashboardHub(INTERVAL)
    early = hub.register()
    drain(early)
    a1 = row("r1", "cart-a", items={"7": 1})
    hub.feed({"carts": ([a1], [])})
    await settled(hub)
    drain(early)
    # Cart b comes and goes (7 goes 1 -> 3 -> 1) while a staff socket connects mid-way.
    b1 = row("r2", "cart-b", items={"7": 2})
    hub.feed({"carts": ([b1], [])})
    late = hub.register()
    assert drain(late) == []  # a snapshot now would say 7: 3, and no diff would correct it
    hub.feed({"carts": ([], [b1])})
    await settled(hub)
    [snapshot] = drain(late)
    assert snapshot["type"] == "snapshot"
    assert snapshot["stats"]["items"] == {"7": 1}
    assert drain(early) == []  # nothing changed overall
    hub.close()


async def test_replica_changes_travel_in_the_next_diff():
    hub = DashboardHub(INTERVAL)
    queue = hub.register()
    drain(queue)
    hub.set_replicas({"a": "up"})
    hub.set_replicas({"a": "up"})
    await settled(hub)
    [diff] = drain(queue)
    assert diff["replicas"] == {"a": "up"}
    assert diff["stats"] == {}
    hub.set_replicas({"a": "up", "b": "down"})
    hub.feed({"carts": ([row("r1", "cart-a")], [])})
    await settled(hub)
    [diff] = drain(queue)
    assert diff["replicas"] == {"a": "up", "b": "down"}
    assert diff["stats"]["shoppers"] == 1
    hub.close()


async def test_history_keeps_fifteen_minutes_of_shoppers_and_pages():
    now = [1000.0]
    hub = DashboardHub(INTERVAL, clock=lambda: now[0])
    for i in range(4):
        now[0] += 400
        hub.feed({"carts": ([row(f"r{i}", "cart-a")], [])})
        await settled(hub)
    queue = hub.register()
    [snapshot] = drain(queue)
    history = snapshot["history"]
    # The oldest sample is the last one before the window: it gives the values at its start.
    assert history == [[1400.0, 1, 1], [1800.0, 1, 2], [2200.0, 1, 3], [2600.0, 1, 4]]
    assert history[0][0] <= now[0] - HISTORY_SECONDS < history[1][0]
    hub.close()


async def test_subscribers_joining_at_random_times_converge_on_the_truth():
    rng = random.Random(4)
    hub = DashboardHub(INTERVAL / 5)
    live: dict[str, object] = {}
    clients: list[tuple[asyncio.Queue, dict | None]] = []
    for step in range(300):
        joins, leaves = [], []
        before = sorted(live)  # a diff never joins and leaves the same row
        for _ in range(rng.randint(1, 4)):
            if before and rng.random() < 0.45:
                leaves.append(live.pop(before.pop(rng.randrange(len(before)))))
            else:
                presence = row(
                    f"r{step}-{len(joins)}",
                    f"cart-{rng.randint(0, 9)}",
                    page=rng.choice(["/", "/p/1/", "/checkout/"]),
                    items={str(rng.randint(1, 4)): rng.randint(1, 3)},
                    rev=step * 10 + len(joins),
                )
                live[presence.ref] = presence
                joins.append(presence)
        hub.feed({"carts": (joins, leaves)})
        if rng.random() < 0.05:
            clients.append((hub.register(), None))
        if rng.random() < 0.3:
            await asyncio.sleep(rng.choice([0, INTERVAL / 10, INTERVAL / 4]))
    await settled(hub)
    truth = recompute(list(live.values()))
    assert len(clients) > 3
    for queue, _ in clients:
        messages = drain(queue)
        assert messages[0]["type"] == "snapshot"
        stats = copy.deepcopy(messages[0]["stats"])
        for diff in messages[1:]:
            assert diff["type"] == "diff"
            apply_stats_diff(stats, diff["stats"])
        assert stats == truth
    hub.close()
