#!/usr/bin/env python
"""What the servers' GC policy (shop/gc_tuning.py) leaves behind under steady churn (issue 9).

    .venv/bin/python bench/gc_churn_bench.py                       # 120 s of churn, ~3 minutes
    .venv/bin/python bench/gc_churn_bench.py --duration 30 --server-env GC_THRESHOLD=700,10,10

Not a test: it prints figures. Two daphne nodes (one Redis, one SQLite file, as
bench/load_bench.py) with bench/_diag/sitecustomize.py, and `manage.py simulate_shoppers`
against both for --duration seconds: shoppers arrive (each loads the storefront page over
HTTP, then opens its tabs), add and remove items, and leave (--churn per second, each
replaced by a new one). Frozen objects that later end in a reference cycle are never freed,
so the policy must not freeze work in flight (an HTTP request's objects) nor objects that
closed sockets leave in cycles. After the run, with every client gone, each node counts
the cyclic garbage among what it had frozen, and reports its collections: full ones, the
objects each walked, the longest wall-clock and CPU pause, and the policy's freezes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.load_bench import gc_policy, machine, server_variable  # noqa: E402
from tests.daphne_server import DaphneServer, prepare_database, server_env  # noqa: E402
from tests.prometheus_text import Scrape  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

DIAG_DIR = Path(__file__).resolve().parent / "_diag"


def scrape(node: DaphneServer) -> Scrape:
    with urllib.request.urlopen(node.url + "/metrics", timeout=10) as response:
        return Scrape(response.read().decode())


def garbage_census(node: DaphneServer, path: Path) -> dict:
    """bench/_diag/sitecustomize.py's count of the cyclic garbage (SIGUSR2)."""
    node.process.send_signal(signal.SIGUSR2)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        diag = json.loads(path.read_text())
        if "garbage" in diag:
            return diag
        time.sleep(0.5)
    raise RuntimeError(f"node {node.port} did not count its garbage")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of churn")
    parser.add_argument("--shoppers", type=int, default=300, help="shoppers online at once")
    parser.add_argument("--tabs", type=int, default=2, help="sockets per shopper")
    parser.add_argument("--churn", type=float, default=10.0, help="departures per second")
    parser.add_argument(
        "--server-env",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        type=server_variable,
        help="an environment variable of both servers, e.g. GC_TUNING=off (repeatable)",
    )
    args = parser.parse_args()
    load_start, started = os.getloadavg()[0], time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="gc-churn-"))
    database = prepare_database(base / "db.sqlite3")
    redis = RedisServer().start()
    nodes: dict[str, DaphneServer] = {}
    try:
        for name in ("a", "b"):
            env = {
                "TRACKER_NODE_NAME": name,
                "PYTHONPATH": str(DIAG_DIR),
                "LOAD_BENCH_DIAG": str(base / f"diag-{name}.json"),
                **dict(args.server_env),
            }
            nodes[name] = DaphneServer(database, redis_url=redis.url, env=env, var_dir=base / name)
            nodes[name].start()
        print(f"churn: {args.shoppers} shoppers x {args.tabs} tabs, {args.churn:g} leave and "
              f"arrive per second, {args.duration:g} s", file=sys.stderr)  # fmt: skip
        churn_from = time.time()
        result = subprocess.run(
            [sys.executable, "manage.py", "simulate_shoppers",
             "--nodes", ",".join(n.ws_url for n in nodes.values()),
             "--shoppers", str(args.shoppers), "--tabs", str(args.tabs),
             "--duration", str(args.duration), "--churn", str(args.churn), "--quiet", "--json"],
            cwd=ROOT, env=server_env(base, database, redis.url), capture_output=True, text=True,
            check=True, timeout=args.duration + 300,
        )  # fmt: skip
        summary = json.loads(result.stdout)
        churn_to = time.time()
        time.sleep(5)  # daphne forgets closed connections within a few seconds
        lines = [
            f"GC churn benchmark: {machine()}; command: "
            f"{' '.join([Path(sys.executable).name, *sys.argv])}",
            f"simulation: {summary['shoppers_arrived']:,} shoppers arrived (each one storefront "
            f"page over HTTP), {summary['connections_opened']:,} sockets opened and "
            f"{summary['connections_closed']:,} closed, {summary['actions_sent']:,} actions, "
            f"{sum(summary['connection_failures'].values())} failed connects",
        ]
        for name, node in nodes.items():
            metrics = scrape(node)
            policy = gc_policy(metrics)
            freezes = ", ".join(
                f"{when} {metrics.value('gc_freezes_total', when=when):.0f}"
                for when in ("start-up", "quiet", "forced")
            )
            diag = garbage_census(node, base / f"diag-{name}.json")
            full = [e for e in diag["full"] if churn_from <= e[0] <= churn_to]
            longest = max(full, key=lambda e: e[1], default=None)
            garbage = diag["garbage"]
            frozen = garbage["frozen"]
            per_thousand = frozen["objects"] / max(1, summary["shoppers_arrived"]) * 1000
            lines.append(
                f"- node {name.upper()} ({policy}): {len(full)} full collections during the "
                f"churn, walking up to {max((e[3] for e in full), default=0):,} objects; "
                + (
                    f"longest {longest[1] * 1000:.0f} ms ({longest[4] * 1000:.0f} ms CPU); "
                    if longest
                    else ""
                )
                + f"freezes: {freezes}; after the run: {garbage['frozen_objects']:,} objects "
                f"frozen, of which {frozen['objects']:,} cyclic garbage (never freed while "
                f"frozen; {per_thousand:.0f} per 1,000 shoppers): "
                + ", ".join(f"{t} {c}" for t, c in frozen["types"][:8])
                + f"; unfrozen cyclic garbage awaiting collection: "
                f"{garbage['collected']['objects']:,}"
            )
        lines.append(
            f"{time.monotonic() - started:.0f} s; load average {load_start:.2f} at start, "
            f"{os.getloadavg()[0]:.2f} at end"
        )
        print("\n".join(lines))
    finally:
        for node in nodes.values():
            node.stop(5)
        redis.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
