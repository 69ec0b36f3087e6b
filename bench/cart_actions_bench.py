#!/usr/bin/env python
"""Cart actions per second on one node (issue 12): the saturation curve.

    .venv/bin/python bench/cart_actions_bench.py --before cf173ec     # both codes, SQLite and
                                                                     # PostgreSQL, ~12 minutes
    .venv/bin/python bench/cart_actions_bench.py --databases sqlite --rates 100,300,500

One daphne node (DEBUG off, the embedded default: in-memory channel layer and tracker; with
--redis a redis-server for both), a fresh database (a SQLite file, or a database on a
throwaway PostgreSQL server started here, tests/postgres_server.py), migrated and seeded.
The shopper simulator (shop.simulator, real HTTP and websocket clients, in this process on
the same machine) keeps `--shoppers` shoppers online, one tab each, and each sends
add_item / remove_item one at a time, waiting for the reply, then thinks for a random
(exponential) time with mean shoppers / rate: the offered rate. For each offered rate, after
every shopper is online and a warm-up, for `--seconds`: the achieved rate (replies per
second), reply latency p50 / p99 (send -> the `ok` or `error`), errors, and the node's CPU
per action (utime + stime from /proc over the window, idle cost included). Each code's node
is measured in turn at each rate (so load changes touch them alike). A closed loop:
when the node saturates, shoppers wait for replies and the achieved rate falls below the
offered one.

`--before REV` measures that git revision's site too (bench/revision.py) and prints both
curves side by side. The summary line per curve: the highest offered rate with p99 <= 100 ms
and at least 95 % of it achieved. Nothing asserts; the figures and the commands are in
bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.revision import describe, exported  # noqa: E402
from shop.simulator import Config, Latency, Node, Simulation  # noqa: E402
from tests.daphne_server import ROOT as CODE  # noqa: E402
from tests.daphne_server import DaphneServer, prepare_database  # noqa: E402
from tests.postgres_server import PostgresServer  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
P99_TARGET_MS = 100.0
ACHIEVED_SHARE = 0.95


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Point:
    offered: float
    achieved: float
    latency: Latency
    errors: int
    timeouts: int
    cpu_ms: float  # node CPU per action
    load: float

    @property
    def sustained(self) -> bool:
        return (
            self.latency.p99 is not None
            and self.latency.p99 <= P99_TARGET_MS
            and self.achieved >= ACHIEVED_SHARE * self.offered
        )


async def measure(node: DaphneServer, rate: float, args: argparse.Namespace) -> Point:
    """One point of the curve: `args.shoppers` shoppers offering `rate` actions/s."""
    config = Config(
        nodes=(Node.parse(node.ws_url),),
        shoppers=args.shoppers,
        think=args.shoppers / rate,
        duration=3600,
        seed=int(rate),
        connect_concurrency=20,
    )
    simulation = Simulation(config)
    await simulation.start()
    try:
        if not await simulation.populated(within=120):
            raise RuntimeError(f"only {len(simulation.online)} shoppers came online")
        await asyncio.sleep(args.warmup)
        counters = simulation.counters
        first = len(counters.latencies)
        errors0, timeouts0 = sum(counters.replies_error.values()), counters.reply_timeouts
        cpu0, started = cpu_seconds(node.process.pid), time.perf_counter()
        await asyncio.sleep(args.seconds)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(node.process.pid) - cpu0
        window = counters.latencies[first:]
        errors = sum(counters.replies_error.values()) - errors0
        timeouts = counters.reply_timeouts - timeouts0
    finally:
        await simulation.stop()
    return Point(
        offered=rate,
        achieved=len(window) / elapsed,
        latency=Latency.of(window),
        errors=errors,
        timeouts=timeouts,
        cpu_ms=cpu / max(1, len(window)) * 1000,
        load=os.getloadavg()[0],
    )


async def curves(
    codes: list[tuple[str, Path]], database: str, urls: list[str | None], args, base: Path
) -> dict[str, list[Point]]:
    """The curve of each code on `database`: a node each (a database each), all started at
    once and measured in turn at each rate, so that a change in the machine's load between
    points touches every code alike."""
    redis = RedisServer().start() if args.redis else None
    nodes = {
        label: DaphneServer(
            url or prepare_database(base / f"{uuid.uuid4().hex}.sqlite3"),
            redis_url=redis.url if redis else None,
            env={"SHOPPER_SOCKETS_PER_ADDRESS": "0"},  # every simulated shopper is 127.0.0.1
            var_dir=base / uuid.uuid4().hex,
            code=code,
        )
        for (label, code), url in zip(codes, urls, strict=True)
    }
    points: dict[str, list[Point]] = {label: [] for label in nodes}
    saturated: set[str] = set()
    try:
        for node in nodes.values():
            node.start()
        for rate in args.rates:
            for label, node in nodes.items():
                if label in saturated:
                    continue
                say(
                    f"  {label}, {database}: offering {rate:g} actions/s "
                    f"(load {os.getloadavg()[0]:.2f})"
                )
                point = await measure(node, rate, args)
                points[label].append(point)
                say(
                    f"    achieved {point.achieved:.0f}/s, p50 {point.latency.p50:.1f} ms, "
                    f"p99 {point.latency.p99:.1f} ms, {point.cpu_ms:.2f} ms CPU per action"
                )
                if point.achieved < 0.6 * rate:
                    say("    saturated well below the offered rate: higher rates skipped")
                    saturated.add(label)
    finally:
        for node in nodes.values():
            node.stop()
        if redis is not None:
            redis.kill()
    return points


def cell(point: Point | None) -> str:
    if point is None:
        return "— | — | —"
    lat = point.latency
    return f"{point.achieved:,.0f} | {lat.p50:.1f} / {lat.p99:.1f} | {point.cpu_ms:.2f}" + (
        f" ({point.errors} err, {point.timeouts} t/o)" if point.errors or point.timeouts else ""
    )


def best(points: list[Point]) -> str:
    sustained = [p for p in points if p.sustained]
    if not sustained:
        return "none"
    top = max(sustained, key=lambda p: p.offered)
    return f"{top.achieved:,.0f}/s (offered {top.offered:g}, p99 {top.latency.p99:.1f} ms)"


def report(results: dict[tuple[str, str], list[Point]], labels: list[str], args) -> list[str]:
    lines = []
    for database in args.databases:
        lines += [
            "",
            f"{database}: offered actions/s -> achieved/s | reply p50 / p99 ms | node CPU ms "
            "per action (load average after the point)",
            "",
            "| offered | "
            + " | ".join(f"{label}: achieved | p50 / p99 | CPU" for label in labels)
            + " | load |",
            "|---:|" + "---:|---:|---:|" * len(labels) + "---:|",
        ]
        for rate in args.rates:
            row = []
            loads = []
            for label in labels:
                point = next((p for p in results[label, database] if p.offered == rate), None)
                row.append(cell(point))
                if point is not None:
                    loads.append(f"{point.load:.1f}")
            lines.append(f"| {rate:g} | " + " | ".join(row) + f" | {' / '.join(loads)} |")
        lines.append("")
        for label in labels:
            lines.append(
                f"- {label}, {database}: highest rate with p99 <= {P99_TARGET_MS:.0f} ms and "
                f">= {ACHIEVED_SHARE:.0%} of the offered rate achieved: "
                f"{best(results[label, database])}"
            )
    return lines


async def main_async(args) -> list[str]:
    started_load = os.getloadavg()[0]
    results: dict[tuple[str, str], list[Point]] = {}
    with contextlib.ExitStack() as stack:
        base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cart-bench-")))
        codes: list[tuple[str, Path]] = []
        if args.before:
            codes.append(
                (
                    f"before ({describe(args.before).split()[0]})",
                    stack.enter_context(exported(args.before)),
                )
            )
        codes.append(("now", CODE))
        postgres = None
        template = None
        if "postgres" in args.databases:
            postgres = PostgresServer().start()
            stack.callback(postgres.stop)
            template = "bench_template"
            prepare_database(postgres.create_database(template), var_dir=base / "template")
        labels = [label for label, _ in codes]
        for database in args.databases:
            urls: list[str | None] = [None] * len(codes)
            if database == "postgres":
                urls = [
                    postgres.create_database(f"bench_{uuid.uuid4().hex}", template=template)
                    for _ in codes
                ]
            found = await curves(codes, database, urls, args, base)
            for label in labels:
                results[label, database] = found[label]
    lines = [
        f"cart actions on one node: {args.shoppers} shoppers, one tab each, "
        f"{args.seconds:g} s per point after {args.warmup:g} s of warm-up, "
        f"{'Redis' if args.redis else 'embedded default (no Redis)'}, DEBUG off; "
        f"load average {started_load:.2f} at start, {os.getloadavg()[0]:.2f} at end",
    ]
    return lines + report(results, labels, args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--databases",
        default="sqlite,postgres",
        type=lambda s: [d for d in s.split(",") if d],
        help="sqlite, postgres or both (default)",
    )
    parser.add_argument(
        "--rates",
        default="100,200,300,400,500,600,800",
        type=lambda s: [float(r) for r in s.split(",") if r],
        help="offered actions per second, one point each",
    )
    parser.add_argument("--shoppers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=15.0, help="measured per point")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--redis", action="store_true", help="the node uses a redis-server")
    parser.add_argument("--before", metavar="REV", help="also measure this git revision")
    args = parser.parse_args()
    for database in args.databases:
        if database not in {"sqlite", "postgres"}:
            parser.error(f"unknown database {database!r}")

    def terminate(signum, frame) -> None:
        raise KeyboardInterrupt  # unwinds, stopping every server started here

    signal.signal(signal.SIGTERM, terminate)
    started = time.monotonic()
    lines = asyncio.run(main_async(args))
    command = " ".join([Path(sys.executable).name, *sys.argv])
    print(f"\n{command}  ({time.monotonic() - started:.0f} s)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
