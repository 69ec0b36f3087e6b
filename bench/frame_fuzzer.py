#!/usr/bin/env python
"""Frame fuzzer (issue 9): foreign, broken and replayed frames on a live cluster's tracker
channels while shoppers come and go; do the staff views still tell the truth?

    .venv/bin/python bench/frame_fuzzer.py [--frames 20000] [--rate 2000] [--seed 1]

Starts a redis-server and two daphne nodes (tests/cluster/faults.py timings: broadcast
0.05 s, down 1.0 s), with shoppers on both and a staff view on each. It captures genuine
frames off the tracker's Redis channels, then publishes `--frames` frames at about `--rate`
a second on the broadcast channel and on both nodes' direct channels, in equal parts of
every kind of tests/tracker/frame_fuzzer.py (random bytes, mutated genuine frames, other
protocol versions, genuine bodies reshaped and signed with the cluster's own key, replays),
while the shoppers keep opening and closing tabs and changing their carts. At the end it
prints the frames sent by kind, each node's `tracker_messages_rejected_total` by reason
(from /metrics) next to what the frames should have caused, and whether both live staff
views and fresh ones equal the truth. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ["SECRET_KEY"] = SECRET = secrets.token_urlsafe(32)  # the nodes' key, known here

import redis.asyncio as aioredis  # noqa: E402

from tests.cluster.faults import (  # noqa: E402
    SETTLE_SECONDS,
    Cluster,
    new_shopper,
    open_staff,
    stays_exact,
    until_exact,
)
from tests.daphne_server import prepare_database  # noqa: E402
from tests.live_clients import Tab  # noqa: E402
from tests.prometheus_text import Scrape  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from tests.tracker.frame_fuzzer import KINDS, FrameFuzzer, capture  # noqa: E402
from tracker import wire  # noqa: E402

CHANNEL = "tracker:site:0"  # the site's tracker name and prefix, shard 0


def rejected_by_reason(url: str) -> Counter:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        scrape = Scrape(response.read().decode())
    return Counter(
        {r: int(scrape.value("tracker_messages_rejected_total", reason=r)) for r in wire.REASONS}
    )


async def shoppers_churn(nodes, tabs: list[Tab], item_ids, rng, until: float) -> int:
    """Shoppers open and close tabs and change their carts until `until` (loop time)."""
    loop = asyncio.get_running_loop()
    actions = 0
    while loop.time() < until:
        roll = rng.random()
        if roll < 0.3 or len(tabs) < 4:
            node = rng.choice(nodes)
            shopper = await new_shopper(node)
            tabs.append(await shopper.open_tab(node, "/"))
        elif roll < 0.5:
            gone = tabs.pop(rng.randrange(len(tabs)))
            await gone.close()
        else:
            await rng.choice(tabs).request({"type": "add_item", "item_id": rng.choice(item_ids)})
        actions += 1
        await asyncio.sleep(0.05)
    return actions


async def run(args: argparse.Namespace, cluster: Cluster) -> bool:
    rng = random.Random(args.seed)
    a, b = cluster.node("a"), cluster.node("b")
    _, view_a = await open_staff(a)
    _, view_b = await open_staff(b)
    replicas = {"a": view_a.node, "b": view_b.node}
    channels = {
        CHANNEL: ["a", "b"],
        f"{CHANNEL}:@{replicas['a']}": ["a"],
        f"{CHANNEL}:@{replicas['b']}": ["b"],
    }
    first = await new_shopper(a)
    item_ids = await asyncio.to_thread(first.item_ids, "high")
    tabs = [await first.open_tab(a, "/")]
    loop = asyncio.get_running_loop()
    churn = shoppers_churn([a, b], tabs, item_ids, rng, loop.time() + 3)
    genuine = await capture(cluster.redis.url, list(channels), churn)
    client = aioredis.Redis.from_url(cluster.redis.url)
    print(f"captured {len(genuine)} genuine frames; fuzzing {args.frames} at ~{args.rate}/s")

    fuzzer = FrameFuzzer(genuine, SECRET, seed=args.seed)
    before = {name: rejected_by_reason(node.url) for name, node in (("a", a), ("b", b))}
    expected = {"a": Counter(), "b": Counter()}
    sent: Counter = Counter()

    async def fuzz() -> None:
        started = loop.time()
        for i in range(args.frames):
            kind = KINDS[i % len(KINDS)]
            frame = fuzzer.frame(kind)
            channel = list(channels)[i % len(channels)]
            await client.publish(channel, frame)
            sent[kind] += 1
            reason = fuzzer.expected_reason(kind, frame)
            if reason is not None:
                for name in channels[channel]:
                    expected[name][reason] += 1
            if i % 100 == 99:  # pace to --rate
                await asyncio.sleep(max(0.0, started + (i + 1) / args.rate - loop.time()))

    fuzzing = asyncio.create_task(fuzz())
    actions = await shoppers_churn(
        [a, b], tabs, item_ids, rng, loop.time() + args.frames / args.rate
    )
    await fuzzing
    took = loop.time()
    await client.aclose()

    ok = True
    for view in (view_a, view_b):
        try:
            await until_exact(view, tabs, SETTLE_SECONDS, f"the truth on {view.node}")
        except AssertionError as error:
            print(f"NOT CONVERGED: {error}")
            ok = False
    _, fresh_a = await open_staff(a)
    _, fresh_b = await open_staff(b)
    try:
        await stays_exact([view_a, view_b, fresh_a, fresh_b], tabs, 2.0)
    except AssertionError as error:
        print(f"NOT EXACT: {error}")
        ok = False
    print(f"converged {loop.time() - took:.2f} s after the last frame; {actions} shopper actions")

    print(f"\nframes sent by kind: {dict(sent)} (total {sum(sent.values())})")
    print(f"{'node':<5} {'reason':<13} {'rejected':>9} {'expected':>9}")
    for name, node in (("a", a), ("b", b)):
        got = rejected_by_reason(node.url) - before[name]
        for reason in wire.REASONS:
            mark = "" if got[reason] == expected[name][reason] else "  <- differs"
            print(f"{name:<5} {reason:<13} {got[reason]:>9} {expected[name][reason]:>9}{mark}")
            ok &= got[reason] == expected[name][reason]
    print(f"\nconvergence held: {'yes' if ok else 'NO'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=2000.0, help="frames per second")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    started = time.perf_counter()
    redis = RedisServer().start()
    base = Path(tempfile.mkdtemp(prefix="frame-fuzzer-"))
    cluster = Cluster(redis, base, prepare_database(base / "db.sqlite3"))
    try:
        ok = asyncio.run(run(args, cluster))
    finally:
        cluster.nodes, nodes = [], cluster.nodes
        for node in nodes:
            node.stop()
        redis.stop()
    print(f"({time.perf_counter() - started:.0f} s in all)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
