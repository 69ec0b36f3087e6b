#!/usr/bin/env python
"""Stock pushes to every page of two nodes (issue 12): commit -> last socket, node CPU per push.

    .venv/bin/python bench/stock_push_bench.py --before cf173ec        # ~10 minutes
    .venv/bin/python bench/stock_push_bench.py --per-node 500,2000 --pushes 5   # smoke check

Two daphne nodes A and B share one redis-server and one SQLite file (as bench/load_bench.py
sets them up: shoppers with carts made directly in the database; the open-file limit
raised). The sockets carry what `--shoppers` says (load_bench.py's option: by default the
cart cookie of an anonymous shopper, as browsers after their first page view). Client
processes (this script with `--_client`) hold `--per-node` shopper sockets on each node
(cumulative steps) and read every message, stamping each `stock` frame's arrival with
CLOCK_MONOTONIC (one clock for every process on the machine).

A push: a buyer on A holds one unit of an item whose stock the setup made 11 (`high`); the
benchmark stamps the time, then checks out over HTTP on A: the stock becomes 10 (`medium`),
committed, and the site pushes the new level. Latency = the arrival of that item's frame on
each held socket - the stamp, so it includes the checkout request itself (its commit, a few
ms: shown apart as "checkout request"). "Stock publish -> last socket" starts instead at the
site's publish of the change on its node bus, right after the commit (and the cart's own
channel-layer message), stamped by a thread of this process subscribed to that channel:
the push without the checkout's HTTP round trip. "-> node's last frame written" ends instead
when the node's fan-out finished writing the change to its sockets (recorded in the servers
by bench/_diag/sitecustomize.py): what the site takes, without the client processes'
reading, which shares this machine's cores with the nodes. Per step: `--pushes` pushes,
one at a time, each after the previous one reached every socket (or 60 s passed). Node
CPU per push = (CPU of the node process over the pushes - its idle CPU over as long,
measured just before with the same sockets held) / pushes. The servers record their full-GC pauses
(bench/_diag/sitecustomize.py): the longest during the pushes is shown, as a pause that
long delays whatever push it falls on.

`--before REV` runs the same on that git revision's site first (bench/revision.py; the
sockets are opened anew for it). Figures and commands: bench/README.md. Nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.load_bench import (  # noqa: E402
    DIAG_DIR,
    SHOPPERS,
    Client,
    cpu_seconds,
    create_sessions,
    load1,
    machine,
    raise_nofile,
    say,
)
from bench.revision import describe, exported  # noqa: E402
from shop.fanout import NODE_CHANNEL  # noqa: E402
from tests.daphne_server import ROOT as CODE  # noqa: E402
from tests.daphne_server import DaphneServer, manage, prepare_database, server_env  # noqa: E402
from tests.live_clients import CSRF_INPUT, Visitor  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

STOCK_TOPIC = "stock"  # shop.broadcast.STOCK_TOPIC (that module needs Django set up)
TARGET_MS = 250.0  # the last of 10,000 sockets of a node
PUSH_TIMEOUT = 60.0
IDLE_SECONDS = 3.0


# -- the client processes -----------------------------------------------------------------


async def client_main() -> None:
    """A child process holding shopper sockets, reading every message (JSON lines on
    stdin/stdout: open, arrivals, close)."""
    from websockets.asyncio.client import connect
    from websockets.protocol import State

    raise_nofile()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    readers: list[asyncio.Task[None]] = []
    arrivals: dict[int, list[float]] = collections.defaultdict(list)
    sockets: list[Any] = []

    async def read(ws: Any) -> None:
        with contextlib.suppress(Exception):
            async for raw in ws:
                if '"stock"' in raw:
                    message = json.loads(raw)
                    if message.get("type") == "stock":
                        arrivals[message["item_id"]].append(time.monotonic())

    async def open_one(cookie: str, port: int, errors: collections.Counter) -> None:
        try:
            ws = await connect(
                f"ws://127.0.0.1:{port}/ws/cart/?page=/",
                additional_headers={
                    "Cookie": cookie,
                    "Origin": f"http://127.0.0.1:{port}",
                },
                open_timeout=30,
                ping_interval=None,
                close_timeout=2,
            )
            first = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if first.get("type") != "cart":
                raise RuntimeError(f"first message {first.get('type')}")
        except Exception as error:  # noqa: BLE001 - counted
            errors[type(error).__name__] += 1
            return
        sockets.append(ws)
        readers.append(asyncio.create_task(read(ws)))

    while line := await reader.readline():
        cmd = json.loads(line)
        reply: dict[str, Any] = {}
        if cmd["op"] == "open":
            gate = asyncio.Semaphore(cmd["concurrency"])
            errors: collections.Counter = collections.Counter()

            async def gated(cookie: str, port: int, gate=gate, errors=errors) -> None:
                async with gate:
                    await open_one(cookie, port, errors)

            await asyncio.gather(*(gated(cookie, port) for cookie, port in cmd["sessions"]))
            reply = {"open": len(sockets), "errors": dict(errors)}
        elif cmd["op"] == "arrivals":
            still_open = sum(ws.state is State.OPEN for ws in sockets)
            reply = {"times": arrivals.get(cmd["item"], []), "open": still_open}
        elif cmd["op"] == "close":
            for ws in sockets:
                ws.transport.abort()
            reply = {"closed": True}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        if cmd["op"] == "close":
            return


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Push:
    failed: str | None  # why the push was not measured
    checkout_ms: float
    last_ms: dict[str, float]  # by node: the last socket's frame
    published_ms: float  # the site's stock publish (just after the commit), NaN if unseen
    p50_ms: dict[str, float]
    reached: dict[str, int]  # sockets that got it, by node
    published_at: float = math.nan  # CLOCK_MONOTONIC
    written_ms: dict[str, float] = field(default_factory=dict)  # by node: its last frame
    # written (the fan-out's write to the stock topic ended), from the publish


@dataclass
class StepResult:
    per_node: int
    held: dict[str, int]
    pushes: list[Push] = field(default_factory=list)
    cpu_ms: dict[str, float] = field(default_factory=dict)  # per push, idle subtracted
    longest_gc: dict[str, float] = field(default_factory=dict)  # full GC during the pushes
    idle_cores: dict[str, float] = field(default_factory=dict)
    load: float = 0.0


PUSH_SETUP = """
import json
from shop.models import Item
ids = list(Item.objects.filter(product__released=True)
           .exclude(pk__in={exclude!r}).order_by("pk").values_list("pk", flat=True)[:{n}])
Item.objects.filter(pk__in=ids).update(stock=11)
print(json.dumps(ids))
"""


def checkout(buyer: Visitor) -> None:
    """Buy the cart through the checkout form (waiting up to PUSH_TIMEOUT: before issue 12
    the request itself sent the push to every page, which took seconds)."""
    with buyer.opener.open(buyer.base_url + "/checkout/", timeout=PUSH_TIMEOUT) as response:
        page = response.read().decode()
    token = CSRF_INPUT.search(page)
    assert token is not None, "no CSRF token on the checkout page"
    data = urllib.parse.urlencode({"csrfmiddlewaretoken": token[1]}).encode()
    with buyer.opener.open(buyer.base_url + "/checkout/", data=data, timeout=PUSH_TIMEOUT):
        pass


class PublishWatch:
    """The moments the site publishes stock changes on its node bus (shop.fanout's
    NODE_CHANNEL, right after the checkout's commit), stamped by a thread of their own
    with CLOCK_MONOTONIC: "publish -> last socket" is the fan-out's part of a push, without
    the checkout request and the client's HTTP round trip. Sites from before the node bus
    publish nothing there."""

    def __init__(self, redis_url: str) -> None:
        import redis

        self.pubsub = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(NODE_CHANNEL)
        self.seen: dict[int, list[float]] = collections.defaultdict(list)
        self.thread = threading.Thread(target=self.listen, daemon=True)
        self.thread.start()

    def listen(self) -> None:
        with contextlib.suppress(Exception):  # ends when the pubsub is closed
            for message in self.pubsub.listen():
                at = time.monotonic()
                kind, data = json.loads(message["data"])
                if kind == STOCK_TOPIC:
                    for item in data:
                        self.seen[item].append(at)

    def published(self, item: int, since: float) -> float:
        return next((t for t in self.seen.get(item, ()) if t >= since), math.nan)

    def close(self) -> None:
        self.pubsub.close()


def pct(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered) - 1e-9)) - 1]


async def run_code(code: Path, args: argparse.Namespace, base: Path) -> list[StepResult]:
    steps = [int(s) for s in args.per_node.split(",")]
    results: list[StepResult] = []
    with contextlib.ExitStack() as stack:
        database = prepare_database(base / "db.sqlite3")
        made = create_sessions(server_env(base, database), 2 * max(steps), 1, base / "s.json")
        env = server_env(base, database)
        # Items at stock 11 (high), a set for each step, made before the nodes start (an
        # update, not a save: nothing to push yet); bought one unit each, they go medium.
        setup = PUSH_SETUP.format(exclude=made["probe_items"], n=args.pushes * len(steps))
        items = json.loads(manage("shell", "-c", setup, env=env).stdout.splitlines()[-1])
        if len(items) < args.pushes * len(steps):
            raise RuntimeError(f"only {len(items)} items to push with")
        redis = RedisServer().start()
        stack.callback(redis.kill)
        watch = PublishWatch(redis.url)
        stack.callback(watch.close)
        nodes: dict[str, DaphneServer] = {}
        for name in ("a", "b"):
            node = DaphneServer(
                database,
                redis_url=redis.url,
                env={
                    "TRACKER_NODE_NAME": name,
                    "SHOPPER_SOCKETS_PER_ADDRESS": "0",
                    # bench/_diag/sitecustomize.py records the servers' full-GC pauses
                    "PYTHONPATH": str(DIAG_DIR),
                    "LOAD_BENCH_DIAG": str(base / f"diag-{name}.json"),
                    **(
                        {"LOAD_BENCH_GC_THRESHOLD": args.server_gc_threshold}
                        if args.server_gc_threshold
                        else {}
                    ),
                },
                var_dir=base / name,
                code=code,
            )
            stack.callback(node.stop, 5)
            nodes[name] = node.start()
        buyer = Visitor(nodes["a"].url)
        await asyncio.to_thread(buyer.get, "/")
        buyer_tab = await buyer.open_tab(nodes["a"], "/checkout/")
        clients = [
            Client(i, nodes["ab"[i % 2]], __file__, nice=args.client_nice)
            for i in range(args.clients)
        ]
        for client in clients:
            await client.start()
        try:
            opened = 0
            for per_node in steps:
                new = made["cookies"][args.shoppers][opened : 2 * per_node]
                batches: dict[int, list] = {i: [] for i in range(len(clients))}
                for index, cookie in enumerate(new):
                    client = index % len(clients)
                    batches[client].append([cookie, clients[client].node.port])
                say(f"  {per_node:,} per node: opening {len(new):,} sockets (load {load1():.2f})")
                replies = await asyncio.gather(
                    *(c.call(op="open", sessions=batches[i], concurrency=8)
                      for i, c in enumerate(clients))
                )  # fmt: skip
                opened = 2 * per_node
                held = {"a": 0, "b": 0}
                for index, reply in enumerate(replies):  # each client's sockets so far
                    held["ab"[index % 2]] += reply["open"]
                step = StepResult(per_node, held)
                results.append(step)
                errors = [r["errors"] for r in replies if r["errors"]]
                if errors:
                    say(f"    failed connects: {errors}")
                await asyncio.sleep(5)  # the connects' aftermath (heartbeats, transfers) settles
                idle0 = {n: cpu_seconds(s.process.pid) for n, s in nodes.items()}
                await asyncio.sleep(IDLE_SECONDS)
                for n, s in nodes.items():
                    step.idle_cores[n] = (cpu_seconds(s.process.pid) - idle0[n]) / IDLE_SECONDS
                cpu0 = {n: cpu_seconds(s.process.pid) for n, s in nodes.items()}
                started, window_start = time.monotonic(), time.time()
                for item in items[: args.pushes]:
                    step.pushes.append(await push(item, buyer, buyer_tab, clients, watch))
                    if step.pushes[-1].failed:
                        say(f"    a push failed ({step.pushes[-1].failed}): the step stops")
                        break
                elapsed = time.monotonic() - started
                for n, s in nodes.items():
                    used = cpu_seconds(s.process.pid) - cpu0[n] - step.idle_cores[n] * elapsed
                    step.cpu_ms[n] = used / len(step.pushes) * 1000
                items = items[args.pushes :]
                step.load = load1()
                await asyncio.sleep(1.5)  # the diagnostics file is rewritten every second
                for name in nodes:
                    step.longest_gc[name] = longest_full_gc(
                        base / f"diag-{name}.json", window_start, time.time()
                    )
                    note_writes(step.pushes, name, base / f"diag-{name}.json")
                done = [max(p.last_ms.values()) for p in step.pushes if not p.failed]
                last = max(done, default=0)
                say(f"    pushes done; last socket at most {last:.0f} ms after the checkout")
        finally:
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
            await buyer_tab.abort()
    return results


def longest_full_gc(path: Path, start: float, end: float) -> float:
    try:
        full = json.loads(path.read_text())["full"]
    except (OSError, ValueError, KeyError):
        return float("nan")
    return max((took for at, took, *_ in full if start <= at <= end), default=0.0)


async def push(item: int, buyer: Visitor, tab, clients: list[Client], watch: PublishWatch) -> Push:
    started = time.monotonic()
    try:
        await tab.request({"type": "add_item", "item_id": item}, within=PUSH_TIMEOUT)
        started = time.monotonic()
        await asyncio.to_thread(checkout, buyer)
    except (TimeoutError, OSError, AssertionError, ConnectionError) as error:
        failed = f"{type(error).__name__} after {time.monotonic() - started:.0f} s"
        return Push(failed, float("nan"), {}, math.nan, {}, {})
    checkout_ms = (time.monotonic() - started) * 1000
    deadline = time.monotonic() + PUSH_TIMEOUT
    while True:
        replies = await asyncio.gather(*(c.call(op="arrivals", item=item) for c in clients))
        # (An item may have been pushed in an earlier step: only this push's frames count.)
        got = sum(1 for r in replies for t in r["times"] if t >= started)
        expected = sum(r["open"] for r in replies)
        if got >= expected or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    by_node: dict[str, list[float]] = {"a": [], "b": []}
    published_at = watch.published(item, started)
    for index, reply in enumerate(replies):
        by_node["ab"[index % 2]] += [(t - started) * 1000 for t in reply["times"] if t >= started]
    return Push(
        None,
        checkout_ms,
        {n: max(times, default=float("nan")) for n, times in by_node.items()},
        (published_at - started) * 1000,
        {n: pct(times, 0.5) if times else float("nan") for n, times in by_node.items()},
        {n: len(times) for n, times in by_node.items()},
        published_at,
    )


def note_writes(pushes: list[Push], name: str, diag: Path) -> None:
    """Each push's end of the node's write to its sockets (bench/_diag/sitecustomize.py's
    records of the fan-out: the first write of stock levels that began after the publish)."""
    try:
        deliveries = json.loads(diag.read_text())["deliveries"]
    except (OSError, ValueError, KeyError):
        return
    for push in pushes:
        ends = [end for began, end, _ in deliveries if began >= push.published_at]
        if ends:
            push.written_ms[name] = (ends[0] - push.published_at) * 1000


def summarize(label: str, results: list[StepResult]) -> list[str]:
    lines = []
    for step in results:
        failed = [p.failed for p in step.pushes if p.failed]
        pushes = [p for p in step.pushes if not p.failed]
        if not pushes:
            lines.append(
                f"| {label} | {step.per_node:,} | 0 | FAILED: {failed[0]} | | | | | | | | "
                f"{step.load:.1f} |"
            )
            continue
        last = [max(p.last_ms.values()) for p in pushes]
        fan_out = [max(p.last_ms.values()) - p.published_ms for p in pushes]
        fan_out_ms = (
            f"{pct(fan_out, 0.5):.0f} / {max(fan_out):.0f}"
            if not any(math.isnan(f) for f in fan_out)
            else "—"
        )
        written = [
            [p.written_ms.get(n, math.nan) for p in pushes if not math.isnan(p.published_at)]
            for n in "ab"
        ]
        written_ms = (
            " / ".join(f"{pct(w, 0.5):.0f}" for w in written)
            if all(w and not any(math.isnan(x) for x in w) for w in written)
            else "—"
        )
        p50 = [max(p.p50_ms.values()) for p in pushes]
        reached = min(sum(p.reached.values()) for p in pushes)
        lines.append(
            f"| {label} | {step.per_node:,} (held A {step.held['a']:,} / B {step.held['b']:,}) "
            f"| {len(pushes)} | {pct(last, 0.5):.0f} / {max(last):.0f} | {fan_out_ms} | "
            f"{written_ms} | "
            f"{pct(p50, 0.5):.0f} | "
            f"{pct([p.checkout_ms for p in pushes], 0.5):.0f} | "
            f"{step.cpu_ms['a']:.0f} / {step.cpu_ms['b']:.0f} | "
            f"{step.longest_gc['a']:.2f} / {step.longest_gc['b']:.2f} | "
            f"{reached:,} of {sum(step.held.values()):,} | {step.load:.1f} |"
            + (f" then a push failed: {failed[0]}" if failed else "")
        )
    return lines


async def main_async(args: argparse.Namespace) -> list[str]:
    raise_nofile()
    load_start = load1()
    labelled: list[tuple[str, list[StepResult]]] = []
    with contextlib.ExitStack() as stack:
        codes: list[tuple[str, Path]] = []
        if args.before:
            label = f"before ({describe(args.before).split()[0]})"
            codes.append((label, stack.enter_context(exported(args.before))))
        codes.append(("now", CODE))
        for label, code in codes:
            say(f"{label}")
            base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="push-bench-")))
            labelled.append((label, await run_code(code, args, base)))
    lines = [
        f"stock pushes to two nodes (one Redis, one SQLite file), {SHOPPERS[args.shoppers]}, "
        f"{args.clients} client processes (nice +{args.client_nice}), servers' GC thresholds "
        f"{args.server_gc_threshold or 'default'}; load average {load_start:.2f} at start, "
        f"{load1():.2f} at end",
        "",
        "| code | sockets per node | pushes | checkout -> last socket ms, median / max | "
        "stock publish -> last socket ms, median / max | "
        "stock publish -> node's last frame written ms, median A / B | "
        "-> median socket ms (median push) | checkout request ms | node CPU ms per push A / "
        "B | longest full GC during the pushes s, A / B | fewest sockets reached | load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, results in labelled:
        lines += summarize(label, results)
    lines += [
        "",
        f"Target: the last of 10,000 sockets of a node within {TARGET_MS:.0f} ms of the commit.",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-node", default="2000,10000", help="sockets per node, per step")
    parser.add_argument("--pushes", type=int, default=10, help="pushes per step")
    parser.add_argument("--clients", type=int, default=4, help="client processes (even)")
    parser.add_argument(
        "--client-nice",
        type=int,
        default=0,
        metavar="N",
        help="run the client processes N steps nicer than the nodes (they share the cores: "
        "the nodes' writes then measure the site with less of the clients' reading in them)",
    )
    parser.add_argument("--before", metavar="REV", help="also measure this git revision")
    parser.add_argument(
        "--shoppers",
        choices=sorted(SHOPPERS),
        default="cart",
        help="what the sockets' handshakes carry (as load_bench.py's option)",
    )
    parser.add_argument(
        "--server-gc-threshold",
        metavar="G0,G1,G2",
        help="gc.set_threshold in the servers (bench/_diag/sitecustomize.py), to see the "
        "pushes without the full-GC pauses of a large heap; default: Python's",
    )
    args = parser.parse_args()

    def terminate(signum, frame) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    started = time.monotonic()
    lines = asyncio.run(main_async(args))
    print(f"\nstock push benchmark: {machine()}; {time.monotonic() - started:.0f} s; "
          f"{' '.join([Path(sys.executable).name, *sys.argv])}\n")  # fmt: skip
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_client":
        asyncio.run(client_main())
    else:
        sys.exit(main())
