#!/usr/bin/env python
"""Dashboard benchmarks (issue 4): aggregator cost per change, add_item -> staff diff latency.

    .venv/bin/python bench/dashboard_bench.py              # full figures (about 4 minutes)
    .venv/bin/python bench/dashboard_bench.py --quick      # fewer samples, a smoke check
    .venv/bin/python bench/dashboard_bench.py --only aggregator

Not a test. Two parts:

- aggregator: `dashboard.aggregates.Aggregator` holding N presences (carts of one to three
  tabs, a few items each, pages from a fixed set of paths), then many single-row changes,
  each applied as the hub applies a tracker diff and followed by `take_diff()` (as if each
  change had its own diff interval): joins, leaves, and meta updates (the tracker's
  update: a leave and a join in one diff). Microseconds per change; the target is a
  100,000 / 100 ratio of at most 2 (the cost of a change must not grow with the number of
  presences).
- latency: real daphne servers (this script starts them, and a redis-server for two nodes,
  on free ports; everything is stopped at the end): a shopper socket sends `add_item` (or
  `remove_item`, alternately, so stock never runs out) and a staff socket waits for the
  diff that shows the new quantity. The latency is from just before the shopper's send to
  the arrival of that diff, both stamped in this process. Samples are spaced by more than
  a broadcast period plus a diff interval, with jitter, so each one starts from a quiet
  system. One node: shopper and staff on one embedded-default daphne. Two nodes: shopper
  on A, staff on B, sharing Redis and a database. Target: p99 <= broadcast period (0.2 s)
  + diff interval (0.1 s) + 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dashboard.aggregates import Aggregator  # noqa: E402
from tests.daphne_server import (  # noqa: E402
    DaphneServer,
    create_staff_user,
    prepare_database,
    server_env,
)
from tests.live_clients import StaffClient, Tab, Visitor  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from tracker.conf import TrackerOptions  # noqa: E402

BROADCAST_PERIOD = TrackerOptions().broadcast_period  # the tracker's default, 0.2 s
DIFF_INTERVAL = 0.1  # the default of DASHBOARD_DIFF_INTERVAL, set explicitly on the servers
LATENCY_TARGET = BROADCAST_PERIOD + DIFF_INTERVAL + 0.050
RATIO_TARGET = 2.0
SIZES = (100, 10_000, 100_000)
PATHS = ["/", "/checkout/"] + [f"/products/product-{i}/" for i in range(48)]
STAFF_USER, STAFF_PASSWORD = "bench-staff", "bench-staff-pw"


# -- aggregator ------------------------------------------------------------------------------


class Row(NamedTuple):
    """A tracker presence as the aggregator reads it."""

    key: str
    meta: dict[str, Any]
    ref: str


class Population:
    """Live rows, with O(1) random pick and removal, generating realistic changes."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.rows: list[Row] = []
        self.index: dict[str, int] = {}  # ref -> position in rows
        self.carts: list[str] = []
        self.revs: dict[str, int] = {}
        self.next_ref = 0

    def new_row(self, cart_id: str | None = None, rev: int | None = None) -> Row:
        if cart_id is None:
            cart_id = f"{self.rng.getrandbits(128):032x}"
            self.carts.append(cart_id)
            self.revs[cart_id] = 0
        if rev is not None:
            self.revs[cart_id] = rev
        rng = self.rng
        items = {rng.randrange(1, 400): rng.randint(1, 3) for _ in range(rng.randint(0, 4))}
        meta = {
            "cart_id": cart_id,
            "page": rng.choice(PATHS),
            "items": items,
            "user": None if rng.random() < 0.8 else f"user{rng.randrange(10_000)}",
            "joined_at": 1.7e9 + self.next_ref,
            "rev": self.revs[cart_id],
        }
        self.next_ref += 1
        return Row(cart_id, meta, f"ref-{self.next_ref}")

    def add(self, row: Row) -> None:
        self.index[row.ref] = len(self.rows)
        self.rows.append(row)

    def remove_random(self) -> Row:
        position = self.rng.randrange(len(self.rows))
        row, last = self.rows[position], self.rows[-1]
        self.rows[position] = last
        self.index[last.ref] = position
        self.rows.pop()
        del self.index[row.ref]
        return row

    def join(self) -> Row:
        """A new tab: of a new cart half the time, else of a known cart (maybe gone)."""
        if self.carts and self.rng.random() < 0.5:
            return self.new_row(self.rng.choice(self.carts))
        return self.new_row()


Change = tuple[str, list[Row], list[Row]]  # (kind, joins, leaves)


def changes_for(population: Population, count: int) -> list[Change]:
    """`count` single-row changes, a third of each kind, keeping the population's size."""
    changes: list[Change] = []
    for i in range(count):
        kind = ("join", "leave", "update")[i % 3]
        if kind == "join":
            row = population.join()
            population.add(row)
            changes.append((kind, [row], []))
        elif kind == "leave":
            changes.append((kind, [], [population.remove_random()]))
        else:
            old = population.remove_random()
            new = population.new_row(old.key, rev=int(old.meta["rev"]) + 1)
            new.meta["page"] = old.meta["page"]
            new.meta["joined_at"] = old.meta["joined_at"]
            population.add(new)
            changes.append((kind, [new], [old]))
    return changes


@dataclass
class AggregatorFigures:
    size: int
    per_kind: dict[str, float]  # µs per change, best of the repeats
    mixed: float


def time_aggregator(size: int, changes: int, repeats: int, seed: int = 4) -> AggregatorFigures:
    best: dict[str, float] = {}
    best_mixed = float("inf")
    for repeat in range(repeats):
        rng = random.Random(seed * 1000 + repeat)
        population = Population(rng)
        for _ in range(size):
            population.add(population.join())
        aggregator = Aggregator()
        aggregator.apply(list(population.rows), [])  # as the hub seeds from Tracker.presence
        aggregator.take_diff()
        plan = changes_for(population, changes)
        spent = {"join": 0, "leave": 0, "update": 0}
        clock = time.perf_counter_ns
        gc.collect()
        started = clock()
        for kind, joins, leaves in plan:
            t = clock()
            aggregator.apply(joins, leaves)
            aggregator.take_diff()
            spent[kind] += clock() - t
        total = clock() - started
        if aggregator.pages != size:
            raise AssertionError(f"{aggregator.pages} presences after the run, not {size}")
        counts = {kind: sum(1 for k, _, _ in plan if k == kind) for kind in spent}
        for kind, nanoseconds in spent.items():
            per = nanoseconds / counts[kind] / 1000
            best[kind] = min(best.get(kind, float("inf")), per)
        best_mixed = min(best_mixed, total / len(plan) / 1000)
    return AggregatorFigures(size, best, best_mixed)


def aggregator_part(quick: bool) -> tuple[list[str], bool]:
    changes, repeats = (3_000, 3) if quick else (30_000, 5)
    figures = [time_aggregator(size, changes, repeats) for size in SIZES]
    lines = [
        f"Aggregator cost per change (apply + take_diff), µs, best of {repeats} runs of "
        f"{changes:,} changes",
        "",
        "| presences | join | leave | update (leave+join) | all changes |",
        "|---:|---:|---:|---:|---:|",
    ]
    for f in figures:
        lines.append(
            f"| {f.size:,} | {f.per_kind['join']:.2f} | {f.per_kind['leave']:.2f} | "
            f"{f.per_kind['update']:.2f} | {f.mixed:.2f} |"
        )
    ratio = figures[-1].mixed / figures[0].mixed
    ok = ratio <= RATIO_TARGET
    lines += [
        "",
        "| figure | measured | target | result |",
        "|---|---:|---:|---|",
        f"| cost per change, {SIZES[-1]:,} / {SIZES[0]:,} presences | {ratio:.2f} | "
        f"≤ {RATIO_TARGET:g} | {'pass' if ok else 'MISS'} |",
    ]
    return lines, ok


# -- latency ---------------------------------------------------------------------------------


@contextmanager
def running(server: DaphneServer) -> Iterator[DaphneServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def measure(
    shop_node: DaphneServer, staff_node: DaphneServer, samples: int, spacing: float, jitter: float
) -> tuple[list[float], list[float]]:
    """Seconds from a shopper's request on shop_node to the staff diff on staff_node, and
    to the shopper's own `ok` (the database write and the round trip)."""
    staff = Visitor(staff_node.url)
    await asyncio.to_thread(staff.login, STAFF_USER, STAFF_PASSWORD)
    shopper = Visitor(shop_node.url)
    await asyncio.to_thread(shopper.get, "/")
    item_id = (await asyncio.to_thread(shopper.item_ids, "high"))[0]
    key = str(item_id)
    tab: Tab = await shopper.open_tab(shop_node, "/bench/")
    view: StaffClient = await staff.open_dashboard(staff_node)
    await view.until(lambda v: v.stats["pages"] == 1, 10, "the shopper's page")
    rng = random.Random(7)
    latencies: list[float] = []
    replies: list[float] = []  # the shopper's own `ok`, for comparison
    try:
        for i in range(samples + 1):  # the first one warms up (database, code paths)
            await asyncio.sleep(spacing + rng.random() * jitter)
            quantity = 1 if i % 2 == 0 else 0
            kind = "add_item" if quantity else "remove_item"

            def shows(v: StaffClient, quantity: int = quantity) -> bool:
                return v.stats["items"].get(key, 0) == quantity

            before = len(view.diffs)
            started = time.perf_counter()
            request_id = await tab.send({"type": kind, "item_id": item_id})
            await asyncio.gather(tab.reply(request_id), view.until(shows, 5, f"{kind} {i}"))
            if len(view.diffs) != before + 1:
                raise AssertionError(f"sample {i}: {len(view.diffs) - before} diffs, not 1")
            if i:
                latencies.append(view.diffs[-1].arrived - started)
                replies.append(tab.arrived - started)
    finally:
        await tab.close()
        await view.close()
    return latencies, replies


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with `fraction` of them at or below it."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered) - 1e-9)) - 1]


def latency_part(quick: bool, samples: int, spacing: float, jitter: float) -> tuple[list, bool]:
    samples = 20 if quick else samples
    env = {"DASHBOARD_DIFF_INTERVAL": str(DIFF_INTERVAL)}
    results: list[tuple[str, tuple[list[float], list[float]]]] = []
    with ExitStack() as stack:
        base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dash-bench-")))
        database = prepare_database(base / "db.sqlite3")
        create_staff_user(server_env(base, database), STAFF_USER, STAFF_PASSWORD)

        one = stack.enter_context(running(DaphneServer(database, env=env, var_dir=base / "one")))
        print(f"one node: {samples} samples ...", file=sys.stderr, flush=True)
        results.append(("one node", asyncio.run(measure(one, one, samples, spacing, jitter))))
        one.stop()

        redis = RedisServer().start()
        stack.callback(redis.kill)
        nodes = [
            stack.enter_context(
                running(
                    DaphneServer(
                        database,
                        redis_url=redis.url,
                        env={**env, "TRACKER_NODE_NAME": name},
                        var_dir=base / name,
                    )
                )
            )
            for name in ("a", "b")
        ]
        print(f"two nodes: {samples} samples ...", file=sys.stderr, flush=True)
        results.append(
            (
                "two nodes (shopper on A, staff on B)",
                asyncio.run(measure(nodes[0], nodes[1], samples, spacing, jitter)),
            )
        )

    lines = [
        f"End-to-end add_item -> staff diff, ms, {samples} samples each, spaced "
        f"{spacing * 1000:.0f}-{(spacing + jitter) * 1000:.0f} ms",
        "",
        "| setup | p50 | p99 | max | target p99 | result | shopper's own ok, p50 / p99 |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    ok = True
    for name, (latencies, replies) in results:
        p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
        passed = p99 <= LATENCY_TARGET
        ok = ok and passed
        lines.append(
            f"| {name} | {p50 * 1000:.1f} | {p99 * 1000:.1f} | {max(latencies) * 1000:.1f} | "
            f"≤ {LATENCY_TARGET * 1000:.0f} | {'pass' if passed else 'MISS'} | "
            f"{statistics.median(replies) * 1000:.1f} / {percentile(replies, 0.99) * 1000:.1f} |"
        )
    return lines, ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, a smoke check")
    parser.add_argument("--only", choices=["aggregator", "latency"], help="run one part")
    parser.add_argument("--samples", type=int, default=200, help="latency samples per setup")
    parser.add_argument(
        "--spacing",
        type=float,
        default=BROADCAST_PERIOD + DIFF_INTERVAL + 0.05,
        help="least seconds between latency samples",
    )
    parser.add_argument(
        "--jitter", type=float, default=0.3, help="random extra seconds between samples"
    )
    args = parser.parse_args()
    parts: list[Callable[[], tuple[list[str], bool]]] = []
    if args.only in (None, "aggregator"):
        parts.append(lambda: aggregator_part(args.quick))
    if args.only in (None, "latency"):
        parts.append(lambda: latency_part(args.quick, args.samples, args.spacing, args.jitter))
    all_ok = True
    for part in parts:
        lines, ok = part()
        all_ok = all_ok and ok
        print("\n".join(lines), end="\n\n", flush=True)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
