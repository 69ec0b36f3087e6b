#!/usr/bin/env python
"""Product presence (issue 13): node CPU for its pushes while shoppers churn, and the time
from a change to the last page of its product, with 10,000 sockets over 200 product pages.

    .venv/bin/python bench/product_presence_bench.py             # ~9 minutes
    .venv/bin/python bench/product_presence_bench.py --quick     # smoke check, ~2 minutes

Not a test: nothing asserts; it prints tables. Everything is started here and stopped at
the end (also on Ctrl-C or SIGTERM).

Setup (not measured), as bench/load_bench.py and bench/stock_push_bench.py: one SQLite
file, migrated and seeded, plus `--pages` released products (bench-000, ...) of four sizes
each, the last size (the probe's) held by no cart; sessions with carts made directly in the
database (`create_sessions`: one line each, a random size in stock, never a probe size;
the sockets carry their signed cart cookies, as browsers after a first page view);
the open-file limit raised. Then, for each setup, a fresh copy of that file, one
redis-server and two daphne nodes A and B (SHOPPER_SOCKETS_PER_ADDRESS=0), and client
processes (this script with `--_client`, half per node) holding `--per-node` sockets on
each node, spread evenly over the product pages (`?page=/products/<slug>/`) and reading
every message.

Setups: the site with PRODUCT_PRESENCE_INTERVAL = each of `--intervals`, then the control:
the same sockets and churn on `--control` (default: the commit before the product feed
was added), whose nodes push nothing of the kind. For each:

- idle: node CPU over `--idle` s with the sockets held and nothing happening (daphne's
  pings every 20 s per socket, the tracker's heartbeats);
- churn: each client process runs its share of a steady Poisson stream of events, at the
  same rates on both nodes: `--arrivals` shoppers a second open a socket on a random
  product page (a session of the pool; once it is used up, one whose socket left), as
  many leave (a random open socket closes), and `--actions` a second a random open socket
  sends add_item of a random non-probe size of its page's product, or remove_item of the
  one it added. After 3 s of warm-up, over `--churn-seconds`: node CPU (utime + stime from
  /proc) less the idle CPU over as long, per second of churn and per event of that node;
  and, by bench-only instrumentation of the server (below), the CPU the product feed
  itself took. The site's figure less the control's is the whole feature's cost
  (anything the instrumented functions do not cover included, and the noise of runs
  minutes apart on a shared machine); the instrumented one says where it goes;
- latency under churn (sites only; churn goes on): `--probes` times, a probe shopper
  (a real first page view on A, so a signed `cart` cookie) opens a socket on product page
  P on A and waits for its first numbers; after a random pause (0 to one interval: the node's
  flushes come once per interval while pages change, so the change falls at a random
  point between two) it adds P's probe size, waits for every socket of P, then after
  another random pause removes it and waits again. Latency = the arrival of the first
  product_presence message with the new `in_carts` count for that size on a socket of P
  (CLOCK_MONOTONIC stamped by the client processes) - the moment just before the probe
  sent its request, for the last of the sockets of P open on both nodes when it was sent
  (each ~`--per-node / --pages`); the probe's own `ok` is shown apart (the request's
  database write); each change is also logged on stderr as it is measured;
- latency quiet: churn stopped, `--quiet` changes on one product page, each after more
  than an interval without any change (the feed flushes at once): the mechanism without
  the interval's wait.

Instrumentation (`PYTHONPATH` of the servers: a `sitecustomize` written by this script into
its temporary directory, which also loads bench/_diag/sitecustomize.py for the full-GC
pauses): when `shop.product_feed` and `shop.fanout` are imported, it wraps ProductFeed's
`feed` (folding a tracker diff), `_flush` (encoding each changed product's message and
writing it, new pages' first message included), `watch`, `unwatch` and
LocalFanout.`deliver` to a `product:` topic (the frames written, within `_flush`) with
counters of calls and of the thread's CPU time; SIGUSR1 makes the server write them to a
file. The code measured is unchanged.

Figures and commands: bench/README.md, "Product presence (issue 13)".
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.load_bench import (  # noqa: E402
    DIAG_DIR,
    Client,
    cpu_seconds,
    create_sessions,
    load1,
    machine,
    pct,
    raise_nofile,
    say,
)
from bench.revision import describe, exported  # noqa: E402
from tests.daphne_server import ROOT as CODE  # noqa: E402
from tests.daphne_server import DaphneServer, manage, prepare_database, server_env  # noqa: E402
from tests.live_clients import Tab, Visitor  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

SIZES = ("S", "M", "L", "XL")  # the last one is the probe's: no cart holds it
WARM_UP = 3.0
SETTLE = 5.0
WAIT_SLACK = 20.0  # how long past one interval a probe waits for the last socket
PRESENCE = '{"type": "product_presence"'  # how the site's json.dumps starts the message


# -- the servers' instrumentation -----------------------------------------------------------

HOOK = '''"""Bench-only (bench/product_presence_bench.py writes this file): CPU time counters
around the product feed's functions, written to PRESENCE_BENCH_COUNTERS on SIGUSR1; and
bench/_diag/sitecustomize.py (full-GC pauses) when LOAD_BENCH_DIAG is set."""

import importlib.util
import json
import os
import signal
import sys
import time

# bench/_diag/sitecustomize.py: its full-GC records when LOAD_BENCH_DIAG is set, and its
# patch-on-import finder for the counters below in any case.
_spec = importlib.util.spec_from_file_location(
    "load_bench_diag", os.environ["PRESENCE_BENCH_DIAG_SCRIPT"]
)
_diag = importlib.util.module_from_spec(_spec)
sys.modules["load_bench_diag"] = _diag
_spec.loader.exec_module(_diag)

_OUT = os.environ.get("PRESENCE_BENCH_COUNTERS")
counters = {}  # name -> [calls, thread CPU seconds, items]


def timed(name, function, items=None):
    """`function`, counting its calls, its thread CPU time and items(args) (taken before
    the call)."""
    entry = counters.setdefault(name, [0, 0.0, 0])

    def wrapper(*args, **kwargs):
        if items is not None:
            entry[2] += items(args)
        started = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            entry[1] += time.thread_time() - started
            entry[0] += 1

    wrapper.__wrapped__ = function
    return wrapper


def _rows(args):
    joins, leaves = args[1].get("carts", ((), ()))
    return sum(len(part) if hasattr(part, "__len__") else 0 for part in (joins, leaves))


def patch_feed(module):
    feed = module.ProductFeed
    feed.feed = timed("fold", feed.feed, _rows)
    feed._flush = timed("flush", feed._flush, lambda a: len(a[0]._dirty & a[0]._watchers.keys()))
    feed.watch = timed("watch", feed.watch)
    feed.unwatch = timed("unwatch", feed.unwatch)


def patch_fanout(module):
    hub = module.LocalFanout
    deliver = hub.deliver
    entry = counters.setdefault("deliver", [0, 0.0, 0])

    def counted(self, topic, text):
        if not topic.startswith("product:"):
            return deliver(self, topic, text)
        started = time.thread_time()
        written = deliver(self, topic, text)
        entry[1] += time.thread_time() - started
        entry[0] += 1
        entry[2] += written
        return written

    hub.deliver = counted


PATCHES = {"shop.product_feed": patch_feed, "shop.fanout": patch_fanout}


if _OUT:
    # First in line: it, not the diagnostics' finder, patches shop.fanout (the stock
    # writes the diagnostics would record are not used here).
    sys.meta_path.insert(0, _diag._PatchOnImport(PATCHES))
    _seq = [0]

    def dump(signum, frame):
        _seq[0] += 1
        with open(_OUT + ".tmp", "w") as f:
            json.dump({"seq": _seq[0], "counters": counters}, f)
        os.replace(_OUT + ".tmp", _OUT)

    signal.signal(signal.SIGUSR1, dump)
'''


def written_counters(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # not yet written
        return {"seq": 0}


async def read_counters(node: DaphneServer, path: Path) -> dict[str, list[float]]:
    """A server's instrumentation counters now (SIGUSR1, then its file)."""
    before = written_counters(path)["seq"]
    assert node.process is not None
    node.process.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        data = written_counters(path)
        if data["seq"] > before:
            return data["counters"]
        await asyncio.sleep(0.02)
    raise RuntimeError(f"node on port {node.port} wrote no counters")


def counters_delta(end: dict, start: dict) -> dict[str, list[float]]:
    return {
        name: [e - s for e, s in zip(values, start.get(name, [0, 0.0, 0]), strict=True)]
        for name, values in end.items()
    }


def longest_full_gc(path: Path, start: float, end: float) -> float:
    """A server's longest full collection within [start, end] (unix times), seconds
    (bench/_diag/sitecustomize.py's records)."""
    try:
        full = json.loads(path.read_text())["full"]
    except (OSError, ValueError, KeyError):
        return math.nan
    return max((took for at, took, *_ in full if start <= at <= end), default=0.0)


# -- the client processes -------------------------------------------------------------------


class Held:
    """Open sockets, with a random choice and a removal in O(1)."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.index: dict[int, int] = {}

    def add(self, sock: Any) -> None:
        self.index[id(sock)] = len(self.items)
        self.items.append(sock)

    def discard(self, sock: Any) -> None:
        at = self.index.pop(id(sock), None)
        if at is None:
            return
        last = self.items.pop()
        if last is not sock:
            self.items[at] = last
            self.index[id(last)] = at

    def choice(self, rng: random.Random) -> Any:
        return self.items[rng.randrange(len(self.items))] if self.items else None

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class Sock:
    ws: Any
    product: int
    key: str
    added: int | None = None  # the size its cart got from this socket's add_item


@dataclass
class Watch:
    """What a probe waits for: the first message of `slug` with in_carts[item] == count on
    each socket of `waiting`."""

    fragment: str
    item: str
    count: int
    waiting: set[int]
    arrived: list[float] = field(default_factory=list)
    gone: int = 0  # sockets that closed before it came


async def client_main() -> None:
    """A child process holding shopper sockets of one node and running its share of the
    churn (JSON lines on stdin/stdout)."""
    from websockets.asyncio.client import connect

    raise_nofile()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    held = Held()
    counts: collections.Counter = collections.Counter()
    background: set[asyncio.Task] = set()
    state: dict[str, Any] = {"watch": None, "churn": None, "port": 0, "products": []}
    pool: list[str] = []  # sessions never used
    left: collections.deque[str] = collections.deque()  # sessions whose socket left

    def spawn(coroutine: Any) -> None:
        task = loop.create_task(coroutine)
        background.add(task)
        task.add_done_callback(background.discard)

    async def read(sock: Sock) -> None:
        try:
            async for raw in sock.ws:
                if raw.startswith(PRESENCE):
                    counts["presence"] += 1
                    watch = state["watch"]
                    if watch and id(sock) in watch.waiting and watch.fragment in raw:
                        if json.loads(raw)["in_carts"].get(watch.item, 0) == watch.count:
                            watch.arrived.append(time.monotonic())
                            watch.waiting.discard(id(sock))
                elif raw.startswith('{"type": "error"'):
                    counts[f"error {json.loads(raw).get('code')}"] += 1
        except Exception:  # noqa: BLE001 - closed by either side
            pass
        finally:
            held.discard(sock)
            watch = state["watch"]
            if watch and id(sock) in watch.waiting:
                watch.waiting.discard(id(sock))
                watch.gone += 1

    async def open_socket(key: str, product: int, within: float = 30) -> bool:
        port, slug = state["port"], state["products"][product][0]
        try:
            ws = await connect(
                f"ws://127.0.0.1:{port}/ws/cart/?page=/products/{slug}/",
                additional_headers={
                    "Cookie": key,  # a shopper's cookie header (load_bench's cart cookies)
                    "Origin": f"http://127.0.0.1:{port}",
                },
                open_timeout=within,
                ping_interval=None,
                close_timeout=2,
            )
        except Exception as error:  # noqa: BLE001 - counted
            counts[f"failed connect: {type(error).__name__}"] += 1
            return False
        try:
            first = json.loads(await asyncio.wait_for(ws.recv(), within))
            if first.get("type") != "cart":
                raise RuntimeError(f"first message {first.get('type')}/{first.get('code')}")
        except Exception as error:  # noqa: BLE001 - counted
            counts[f"failed first message: {type(error).__name__}"] += 1
            ws.transport.abort()
            return False
        sock = Sock(ws, product, key)
        held.add(sock)
        spawn(read(sock))
        return True

    async def arrive(product: int) -> None:
        key = pool.pop() if pool else left.popleft() if left else None
        if key is None:
            counts["no session left"] += 1
            return
        if await open_socket(key, product):
            counts["arrive"] += 1

    async def depart(sock: Sock) -> None:
        left.append(sock.key)
        with contextlib.suppress(Exception):
            await sock.ws.close()  # as a browser closing the tab: a close frame
        counts["depart"] += 1

    def act(sock: Sock, rng: random.Random) -> None:
        if sock.added is None:
            sock.added = rng.choice(state["products"][sock.product][1])
            message, kind = {"type": "add_item", "item_id": sock.added}, "add"
        else:
            message, kind = {"type": "remove_item", "item_id": sock.added}, "remove"
            sock.added = None
        spawn(send(sock, json.dumps(message)))
        counts[kind] += 1

    async def send(sock: Sock, text: str) -> None:
        try:
            await sock.ws.send(text)
        except Exception:  # noqa: BLE001 - the socket closed meanwhile: counted
            counts["failed send"] += 1

    async def churn(rates: dict[str, float], seed: int) -> None:
        """A Poisson stream of the three kinds of events at these rates (per second), on
        an absolute schedule: a late loop catches up rather than lowering the rate."""
        rng = random.Random(seed)
        kinds, weights = list(rates), list(rates.values())
        total = sum(weights)
        if total <= 0:
            return
        due = loop.time()
        while True:
            due += rng.expovariate(total)
            await asyncio.sleep(max(0.0, due - loop.time()))
            kind = rng.choices(kinds, weights)[0]
            if kind == "arrive":
                spawn(arrive(rng.randrange(len(state["products"]))))
                continue
            sock = held.choice(rng)
            if sock is None:
                continue
            if kind == "depart":
                held.discard(sock)  # no longer a candidate while it closes
                spawn(depart(sock))
            else:
                act(sock, rng)

    while line := await reader.readline():
        cmd = json.loads(line)
        reply: dict[str, Any] = {}
        op = cmd["op"]
        if op == "init":
            state["port"], state["products"] = cmd["port"], cmd["products"]
            pool[:] = cmd["pool"]
        elif op == "open":
            gate = asyncio.Semaphore(cmd["concurrency"])

            async def gated(key: str, product: int, gate: asyncio.Semaphore = gate) -> None:
                async with gate:
                    await open_socket(key, product)

            await asyncio.gather(*(gated(key, product) for key, product in cmd["sockets"]))
            reply = {"open": len(held), "counts": dict(counts)}
        elif op == "churn":
            state["churn"] = loop.create_task(churn(cmd["rates"], cmd["seed"]))
        elif op == "stop_churn":
            task = state["churn"]
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        elif op == "status":
            reply = {"open": len(held), "counts": dict(counts)}
        elif op == "expect":
            slug = cmd["slug"]
            if slug is None:
                state["watch"] = None
            else:
                product = next(i for i, p in enumerate(state["products"]) if p[0] == slug)
                waiting = {id(s) for s in held.items if s.product == product}
                state["watch"] = Watch(f'"product": "{slug}"', cmd["item"], cmd["count"], waiting)
                reply = {"waiting": len(waiting)}
        elif op == "arrivals":
            watch = state["watch"]
            reply = {"times": watch.arrived, "waiting": len(watch.waiting), "gone": watch.gone}
        elif op == "close":
            if state["churn"] is not None:
                state["churn"].cancel()
            for sock in held.items:
                sock.ws.transport.abort()
            reply = {"closed": True}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        if op == "close":
            return


# -- setup ----------------------------------------------------------------------------------

CATALOGUE_SETUP = """
import json
from django.db import transaction
from shop.models import Item, Product

SIZES = {sizes!r}
with transaction.atomic():
    Product.objects.bulk_create(
        Product(name=f"Bench Product {{i:03d}}", brand="Bench", colour="grey", price="10.00",
                slug=f"bench-{{i:03d}}", released=True)
        for i in range({n})
    )
    Item.objects.bulk_create(
        Item(product=p, size=size, position=k, stock=10000 if k == len(SIZES) - 1 else 1000)
        for p in Product.objects.filter(slug__startswith="bench-")
        for k, size in enumerate(SIZES)
    )
sizes = {{}}
for slug, pk in (Item.objects.filter(product__slug__startswith="bench-")
                 .order_by("product__slug", "position").values_list("product__slug", "pk")):
    sizes.setdefault(slug, []).append(pk)
print(json.dumps(sorted(sizes.items())))
"""


@dataclass
class Prepared:
    database: Path
    products: list[list[Any]]  # [slug, [sizes a cart may hold], probe size]
    keys: list[str]  # sessions with carts


def prepare(base: Path, args: argparse.Namespace) -> Prepared:
    """The database every setup starts from (copied): migrated, seeded, the bench's
    products, the sessions. Blocking."""
    database = prepare_database(base / "db.sqlite3")
    env = server_env(base, database)
    script = CATALOGUE_SETUP.format(sizes=SIZES, n=args.pages)
    made = json.loads(manage("shell", "-c", script, env=env).stdout.splitlines()[-1])
    products = [[slug, ids[:-1], ids[-1]] for slug, ids in made]
    pool = math.ceil(args.arrivals * 60)  # then sessions whose socket left come back
    sessions = create_sessions(env, 2 * args.per_node + pool, len(products), base / "s.json")
    if set(sessions["probe_items"]) != {p[2] for p in products}:
        raise RuntimeError("the probe sizes are not the ones create_sessions kept free")
    return Prepared(database, products, sessions["cookies"]["cart"])


def copy_database(source: Path, target_dir: Path) -> Path:
    target_dir.mkdir(parents=True, exist_ok=True)
    for part in source.parent.glob(source.name + "*"):  # the file, and any -wal / -shm
        shutil.copy(part, target_dir / part.name)
    return target_dir / source.name


# -- a setup's run --------------------------------------------------------------------------


@dataclass
class Sample:
    phase: str  # "churn" or "quiet"
    ok_ms: float  # the probe's own request
    last_ms: dict[str, float]  # by node: the last socket of P
    median_ms: float  # the median socket of P, both nodes
    reached: int
    expected: int  # sockets of P open when the change was sent (less those closed since)


@dataclass
class Run:
    label: str
    interval: float | None  # None: the control, no product feed
    held: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    idle_cores: dict[str, float] = field(default_factory=dict)
    churn_cores: dict[str, float] = field(default_factory=dict)
    window: float = 0.0
    events: dict[str, collections.Counter] = field(default_factory=dict)  # in the window
    feed: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # counters
    client_cores: float = 0.0
    redis_cores: float = 0.0
    longest_gc: dict[str, float] = field(default_factory=dict)  # during the probes, by node
    samples: list[Sample] = field(default_factory=list)
    load: float = 0.0


def node_events(replies: list[dict], clients: list[Client]) -> dict[str, collections.Counter]:
    events: dict[str, collections.Counter] = {
        "a": collections.Counter(),
        "b": collections.Counter(),
    }
    for client, reply in zip(clients, replies, strict=True):
        events[client.node_name].update(reply["counts"])
    return events


async def run_setup(
    label: str, code: Path, interval: float | None, prepared: Prepared, hook: Path, base: Path,
    args: argparse.Namespace,
) -> Run:  # fmt: skip
    run = Run(label, interval)
    say(f"{label} (load {load1():.2f})")
    with contextlib.ExitStack() as stack:
        database = copy_database(prepared.database, base / "db")
        redis = RedisServer().start()
        stack.callback(redis.kill)
        nodes: dict[str, DaphneServer] = {}
        for name in ("a", "b"):
            env = {
                "TRACKER_NODE_NAME": name,
                "SHOPPER_SOCKETS_PER_ADDRESS": "0",
                "PYTHONPATH": str(hook),
                "PRESENCE_BENCH_COUNTERS": str(base / f"counters-{name}.json"),
                "PRESENCE_BENCH_DIAG_SCRIPT": str(DIAG_DIR / "sitecustomize.py"),
                "LOAD_BENCH_DIAG": str(base / f"diag-{name}.json"),
            }
            if interval is not None:
                env["PRODUCT_PRESENCE_INTERVAL"] = str(interval)
            node = DaphneServer(
                database, redis_url=redis.url, env=env, var_dir=base / name, code=code
            )
            stack.callback(node.stop, 5)
            nodes[name] = node.start()
        clients = [Client(i, nodes["ab"[i % 2]], __file__) for i in range(args.clients)]
        try:
            await drive(run, nodes, redis, clients, prepared, base, args)
        finally:
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return run


async def drive(
    run: Run, nodes: dict[str, DaphneServer], redis: RedisServer, clients: list[Client],
    prepared: Prepared, base: Path, args: argparse.Namespace,
) -> None:  # fmt: skip
    products = prepared.products
    per_client = len(clients) // 2
    keys = iter(prepared.keys)
    batches: dict[int, list[list[Any]]] = {i: [] for i in range(len(clients))}
    for node_index in range(2):  # socket k of a node: page k mod pages, evenly over its clients
        for k in range(args.per_node):
            batches[2 * (k % per_client) + node_index].append([next(keys), k % len(products)])
    pool = list(keys)
    for index, client in enumerate(clients):
        await client.start()
        await client.call(
            op="init",
            port=client.node.port,
            products=[p[:2] for p in products],
            pool=pool[index :: len(clients)],
        )
    say(f"  opening {2 * args.per_node:,} sockets over {len(products)} product pages")
    started = time.monotonic()
    replies = await asyncio.gather(
        *(c.call(op="open", sockets=batches[i], concurrency=8) for i, c in enumerate(clients))
    )
    failed: collections.Counter = collections.Counter()
    for client, reply in zip(clients, replies, strict=True):
        run.held[client.node_name] = run.held.get(client.node_name, 0) + reply["open"]
        failed.update({k: v for k, v in reply["counts"].items() if k.startswith(BAD)})
    say(f"  held A {run.held['a']:,}, B {run.held['b']:,} after {time.monotonic() - started:.0f} s"
        + (f"; {dict(failed)}" if failed else ""))  # fmt: skip
    await asyncio.sleep(SETTLE)  # the connects' aftermath (transfers, heartbeats) settles

    cpu0 = {n: cpu_seconds(s.process.pid) for n, s in nodes.items()}
    await asyncio.sleep(args.idle)
    for n, s in nodes.items():
        run.idle_cores[n] = (cpu_seconds(s.process.pid) - cpu0[n]) / args.idle

    rates = {
        "arrive": args.arrivals / len(clients),
        "depart": args.arrivals / len(clients),
        "act": args.actions / len(clients),
    }
    for index, client in enumerate(clients):
        await client.call(op="churn", rates=rates, seed=1000 + index)
    say(f"  churn: {args.arrivals:g} arrivals, {args.arrivals:g} departures and "
        f"{args.actions:g} cart actions a second (load {load1():.2f})")  # fmt: skip
    await asyncio.sleep(WARM_UP)
    counters = "counters-{}.json"
    feed0 = {n: await read_counters(s, base / counters.format(n)) for n, s in nodes.items()}
    status0 = await asyncio.gather(*(c.call(op="status") for c in clients))
    cpu0 = {n: cpu_seconds(s.process.pid) for n, s in nodes.items()}
    client0, redis0 = sum(c.cpu_seconds() for c in clients), cpu_seconds(redis.process.pid)
    started = time.monotonic()
    await asyncio.sleep(args.churn_seconds)
    run.window = time.monotonic() - started
    cpu1 = {n: cpu_seconds(s.process.pid) for n, s in nodes.items()}
    run.client_cores = (sum(c.cpu_seconds() for c in clients) - client0) / run.window
    run.redis_cores = (cpu_seconds(redis.process.pid) - redis0) / run.window
    status1 = await asyncio.gather(*(c.call(op="status") for c in clients))
    for n, s in nodes.items():
        run.churn_cores[n] = (cpu1[n] - cpu0[n]) / run.window
        end = await read_counters(s, base / counters.format(n))
        run.feed[n] = counters_delta(end, feed0[n])
    before, after = node_events(status0, clients), node_events(status1, clients)
    run.events = {n: after[n] - before[n] for n in after}
    say(f"  churn CPU A {run.churn_cores['a']:.2f}, B {run.churn_cores['b']:.2f} cores "
        f"(idle {run.idle_cores['a']:.2f}, {run.idle_cores['b']:.2f})")  # fmt: skip

    probes_start = time.time()
    if run.interval is not None and args.probes:
        say(f"  {args.probes} probes under churn")
        run.samples += await probe_under_churn(run.interval, nodes["a"], clients, products, args)
    for client in clients:
        await client.call(op="stop_churn")
    if run.interval is not None and args.quiet:
        say(f"  {args.quiet} probes, quiet")
        await asyncio.sleep(2 + run.interval)
        run.samples += await probe_quiet(run.interval, nodes["a"], clients, products, args)
    probes_end = time.time()
    run.load = load1()
    for counts in node_events(await asyncio.gather(*(c.call(op="status") for c in clients)),
                              clients).values():  # fmt: skip
        for what, n in counts.items():
            if what.startswith(BAD):
                run.failed[what] = run.failed.get(what, 0) + n
    await asyncio.sleep(1.5)  # the diagnostics file is rewritten every second
    for n in nodes:
        run.longest_gc[n] = longest_full_gc(base / f"diag-{n}.json", probes_start, probes_end)


# -- probes ---------------------------------------------------------------------------------


async def open_probe_tab(visitor: Visitor, node: DaphneServer, slug: str) -> Tab:
    """A probe socket on the product's page on `node`, once it has its first numbers."""
    tab = await visitor.open_tab(node, f"/products/{slug}/")
    while (await tab._take(10))["type"] != "product_presence":
        pass
    return tab


async def change(
    tab: Tab, product: list[Any], add: bool, phase: str, interval: float, clients: list[Client]
) -> Sample:
    """The probe adds (or removes) the product's probe size; the time until each socket of
    the product, on both nodes, shows the new count."""
    slug, item = product[0], product[2]
    await asyncio.gather(
        *(c.call(op="expect", slug=slug, item=str(item), count=int(add)) for c in clients)
    )
    started, sent = time.monotonic(), time.perf_counter()
    kind = "add_item" if add else "remove_item"
    await tab.request({"type": kind, "item_id": item}, within=30)
    ok_ms = (tab.arrived - sent) * 1000
    deadline = started + interval + WAIT_SLACK
    while True:
        replies = await asyncio.gather(*(c.call(op="arrivals") for c in clients))
        if sum(r["waiting"] for r in replies) == 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    await asyncio.gather(*(c.call(op="expect", slug=None) for c in clients))
    times: dict[str, list[float]] = {"a": [], "b": []}
    for client, reply in zip(clients, replies, strict=True):
        times[client.node_name] += [(t - started) * 1000 for t in reply["times"]]
    every = times["a"] + times["b"]
    last = {n: max(t, default=math.nan) for n, t in times.items()}
    say(f"    {phase}, {kind} on {slug}: ok {ok_ms:.0f} ms, last socket A {last['a']:.0f} ms, "
        f"B {last['b']:.0f} ms")  # fmt: skip
    return Sample(
        phase,
        ok_ms,
        last,
        pct(every, 0.5) if every else math.nan,
        len(every),
        len(every) + sum(r["waiting"] for r in replies),
    )


async def probe_under_churn(
    interval: float, node: DaphneServer, clients: list[Client], products: list[list[Any]],
    args: argparse.Namespace,
) -> list[Sample]:  # fmt: skip
    rng = random.Random(13)
    visitor = Visitor(node.url)
    await asyncio.to_thread(visitor.get, f"/products/{products[0][0]}/")
    samples = []
    for k in range(args.probes):
        product = products[(k * 7) % len(products)]
        tab = await open_probe_tab(visitor, node, product[0])
        try:
            for add in (True, False):
                await asyncio.sleep(rng.uniform(0, interval))
                samples.append(await change(tab, product, add, "churn", interval, clients))
        finally:
            await tab.abort()
    return samples


async def probe_quiet(
    interval: float, node: DaphneServer, clients: list[Client], products: list[list[Any]],
    args: argparse.Namespace,
) -> list[Sample]:  # fmt: skip
    visitor = Visitor(node.url)
    product = products[len(products) // 2]
    await asyncio.to_thread(visitor.get, f"/products/{product[0]}/")
    tab = await open_probe_tab(visitor, node, product[0])
    samples = []
    try:
        for k in range(args.quiet):
            await asyncio.sleep(interval + 0.5)  # past the interval of the last flush
            samples.append(await change(tab, product, k % 2 == 0, "quiet", interval, clients))
    finally:
        await tab.abort()
    return samples


# -- the report -----------------------------------------------------------------------------


def pair(values: dict[str, float], spec: str = ".0f") -> str:
    return " / ".join(format(values.get(n, math.nan), spec) for n in "ab")


def per_second(run: Run, node: str, name: str, index: int) -> float:
    return run.feed.get(node, {}).get(name, [0, 0.0, 0])[index] / run.window


def feed_ms(run: Run, node: str) -> float:
    """The product feed's own CPU (the instrumented functions), ms per second of churn."""
    return sum(per_second(run, node, f, 1) for f in FEED_PARTS) * 1000


def cpu_table(runs: list[Run]) -> list[str]:
    lines = [
        "| setup | sockets held A / B | churn events /s A / B | idle cores A / B | churn cores "
        "A / B | churn - idle, ms CPU per s A / B | per event ms A / B | of it the product "
        "feed, ms per s A / B | product_presence frames /s A / B | client processes, "
        "Redis cores | load at end |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        events = {n: sum(run.events[n][k] for k in ("arrive", "depart", "add", "remove"))
                  / run.window for n in "ab"}  # fmt: skip
        extra = {n: (run.churn_cores[n] - run.idle_cores[n]) * 1000 for n in "ab"}
        feed = {n: feed_ms(run, n) for n in "ab"}
        frames = {n: per_second(run, n, "deliver", 2) for n in "ab"}
        lines.append(
            f"| {run.label} | {pair(run.held, ',.0f')} | {pair(events, '.1f')} | "
            f"{pair(run.idle_cores, '.3f')} | {pair(run.churn_cores, '.3f')} | "
            f"{pair(extra)} | {pair({n: extra[n] / events[n] for n in 'ab'}, '.2f')} | "
            + (f"{pair(feed, '.1f')} | {pair(frames, ',.0f')} | " if run.interval else "— | — | ")
            + f"{run.client_cores:.2f}, {run.redis_cores:.2f} | {run.load:.1f} |"
        )
    return lines


BAD = ("error", "failed", "no session")  # client counts that are failures
FEED_PARTS = ("fold", "flush", "watch", "unwatch")  # (deliver is within flush)


def feed_table(runs: list[Run]) -> list[str]:
    lines = [
        "| setup | node | fold: diffs /s, rows /s, ms /s, µs per row | flush: /s, products "
        "/s, ms /s | of it writing: frames /s, ms /s, µs per frame | per socket: watches /s; "
        "µs per watch / unwatch |",
        "|---|---|---:|---:|---:|---:|",
    ]
    zero = [0, 0.0, 0]
    for run in runs:
        if run.interval is None:
            continue
        w = run.window
        for n in "ab":
            fold, flush, deliver, watch, unwatch = (
                run.feed[n].get(f, zero) for f in ("fold", "flush", "deliver", "watch", "unwatch")
            )
            lines.append(
                f"| {run.label} | {n.upper()} | {fold[0] / w:.0f}, {fold[2] / w:.0f}, "
                f"{fold[1] / w * 1000:.1f}, {fold[1] / max(1, fold[2]) * 1e6:.0f} | "
                f"{flush[0] / w:.1f}, {flush[2] / w:.0f}, {flush[1] / w * 1000:.1f} | "
                f"{deliver[2] / w:,.0f}, {deliver[1] / w * 1000:.1f}, "
                f"{deliver[1] / max(1, deliver[2]) * 1e6:.1f} | {watch[0] / w:.1f}; "
                f"{watch[1] / max(1, watch[0]) * 1e6:.0f} / "
                f"{unwatch[1] / max(1, unwatch[0]) * 1e6:.0f} |"
            )
    return lines


def ms3(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "—"
    return f"{pct(values, 0.5):.0f} / {pct(values, 0.99):.0f} / {max(values):.0f}"


def latency_table(runs: list[Run]) -> list[str]:
    lines = [
        "| setup | phase | changes | change -> last socket of P, both nodes, ms p50 / p99 / "
        "max | last on A, p50 / p99 / max | last on B, p50 / p99 / max | median socket p50 "
        "ms | sockets reached / expected | probe's own ok p50 / p99 ms | longest full GC s "
        "(A / B) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        for phase in ("churn", "quiet"):
            samples = [s for s in run.samples if s.phase == phase]
            if not samples:
                continue
            last = [max(s.last_ms.values()) for s in samples]
            oks = [s.ok_ms for s in samples]
            gc = {n: run.longest_gc.get(n, math.nan) for n in "ab"}
            lines.append(
                f"| {run.label} | {phase} | {len(samples)} | {ms3(last)} | "
                f"{ms3([s.last_ms['a'] for s in samples])} | "
                f"{ms3([s.last_ms['b'] for s in samples])} | "
                f"{pct([s.median_ms for s in samples], 0.5):.0f} | "
                f"{sum(s.reached for s in samples):,} / {sum(s.expected for s in samples):,} | "
                f"{pct(oks, 0.5):.0f} / {pct(oks, 0.99):.0f} | {pair(gc, '.2f')} |"
            )
    return lines


def attribution(runs: list[Run]) -> list[str]:
    """The control's churn cost next to each site setup's."""
    control = next((r for r in runs if r.interval is None), None)
    lines = []
    for run in runs:
        if run.interval is None or control is None:
            continue
        extra = {
            n: (run.churn_cores[n] - run.idle_cores[n] - control.churn_cores[n]
                + control.idle_cores[n]) * 1000
            for n in "ab"
        }  # fmt: skip
        feed = {n: feed_ms(run, n) for n in "ab"}
        lines.append(
            f"- {run.label}: churn - idle, less the control's: A {extra['a']:+.0f}, B "
            f"{extra['b']:+.0f} ms CPU per s; the product feed's own (instrumented): A "
            f"{feed['a']:.1f}, B {feed['b']:.1f} ms per s"
        )
    return lines


async def main_async(args: argparse.Namespace) -> list[str]:
    raise_nofile()
    load_start = load1()
    runs: list[Run] = []
    with contextlib.ExitStack() as stack:
        base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="presence-bench-")))
        (base / "hook").mkdir()
        (base / "hook" / "sitecustomize.py").write_text(HOOK)
        say(f"setup in {base}: database, {args.pages} products, sessions for "
            f"{2 * args.per_node:,} sockets and the arrivals (load {load1():.2f})")  # fmt: skip
        prepared = await asyncio.to_thread(prepare, base, args)
        setups: list[tuple[str, Path, float | None]] = [
            (f"site, interval {i:g} s", CODE, i) for i in args.intervals
        ]
        if args.control:
            label = f"control ({describe(args.control).split()[0]}: no product feed)"
            setups.append((label, stack.enter_context(exported(args.control)), None))
        for index, (label, setup_code, interval) in enumerate(setups):
            runs.append(
                await run_setup(
                    label, setup_code, interval, prepared, base / "hook", base / f"run{index}", args
                )
            )
    lines = [
        f"product presence: {2 * args.per_node:,} sockets ({args.per_node:,} per node) over "
        f"{args.pages} product pages, two daphne nodes (one Redis, one SQLite file), "
        f"{args.clients} client processes; site: this checkout's working tree; churn "
        f"{args.arrivals:g} arrivals + {args.arrivals:g} departures + {args.actions:g} "
        "add/remove a second over both nodes, "
        f"measured over {args.churn_seconds:g} s; load average {load_start:.2f} at start, "
        f"{load1():.2f} at end",
        "",
        "Node CPU (churn - idle: the same sockets held without churn, over as long):",
        "",
        *cpu_table(runs),
        "",
        *attribution(runs),
        "",
        "The product feed, instrumented (per node, per second of churn):",
        "",
        *feed_table(runs),
        "",
        "Latency: a probe on A adds / removes a size of product P; until every socket of P "
        "(both nodes) shows it:",
        "",
        *latency_table(runs),
    ]
    failed = {r.label: r.failed for r in runs if r.failed}
    if failed:
        lines += ["", f"Failures (connects, error replies), whole run: {failed}"]
    return lines


def default_control() -> str | None:
    """The parent of the commit that added the product feed."""
    found = subprocess.run(
        ["git", "-C", str(ROOT), "log", "--diff-filter=A", "--format=%H", "--",
         "shop/product_feed.py"],
        capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    return f"{found[-1][:12]}^" if found else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-node", type=int, default=5000, help="sockets held per node")
    parser.add_argument("--pages", type=int, default=200, help="product pages they spread over")
    parser.add_argument("--clients", type=int, default=4, help="client processes (even)")
    parser.add_argument(
        "--intervals",
        default="1,0.1",
        help="PRODUCT_PRESENCE_INTERVAL of each setup of the site, seconds",
    )
    parser.add_argument(
        "--control",
        default="auto",
        help="a revision without the feature, run with the same churn "
        "(default: the parent of the commit that added shop/product_feed.py; "
        "'none' to skip)",
    )
    parser.add_argument(
        "--arrivals",
        type=float,
        default=10,
        help="shoppers arriving a second (as many leave), both nodes together",
    )
    parser.add_argument(
        "--actions",
        type=float,
        default=20,
        help="add_item / remove_item a second, both nodes together",
    )
    parser.add_argument("--idle", type=float, default=10, help="seconds idle measured")
    parser.add_argument("--churn-seconds", type=float, default=30, help="seconds of churn measured")
    parser.add_argument(
        "--probes", type=int, default=50, help="probe pages under churn (an add and a remove each)"
    )
    parser.add_argument("--quiet", type=int, default=20, help="probe changes with no churn")
    parser.add_argument(
        "--quick", action="store_true", help="smoke check: 500 per node over 20 pages, short phases"
    )
    args = parser.parse_args()
    if args.quick:
        args.per_node, args.pages, args.idle, args.churn_seconds = 500, 20, 4, 8
        args.probes, args.quiet = 4, 4
    if args.clients < 2 or args.clients % 2:
        parser.error("--clients must be even (half of them per node)")
    args.intervals = [float(i) for i in args.intervals.split(",") if i]
    if args.control == "auto":
        args.control = default_control()
    elif args.control == "none":
        args.control = None

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    started = time.monotonic()
    try:
        lines = asyncio.run(main_async(args))
    except KeyboardInterrupt:
        say("interrupted; everything started here has been stopped")
        return 130
    print(f"\nproduct presence benchmark: {machine()}; {time.monotonic() - started:.0f} s; "
          f"command: {' '.join([Path(sys.executable).name, *sys.argv])}\n")  # fmt: skip
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_client":
        asyncio.run(client_main())
    else:
        sys.exit(main())
