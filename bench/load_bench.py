#!/usr/bin/env python
"""Load benchmark (issue 5): as many concurrent shopper sockets as two daphne nodes hold.

    .venv/bin/python bench/load_bench.py                         # 1k .. 10k, about 4 minutes
    .venv/bin/python bench/load_bench.py --steps 500,1000 --hold 8   # a smoke check
    .venv/bin/python bench/load_bench.py --steps 5000,10000,15000,20000 --hold 15 --keep
    .venv/bin/python bench/load_bench.py --server-env GC_TUNING=off   # Python's GC defaults
    .venv/bin/python bench/load_bench.py --shoppers session   # logged-in shoppers' sockets
    .venv/bin/python bench/load_bench.py --site cf173ec --shoppers session   # an older site

Not a test: nothing here asserts; it prints a table. Everything runs on this machine and is
stopped at the end (also on Ctrl-C or SIGTERM).

Setup (not measured):
- the open-file limit of this process is raised to its hard limit (resource.setrlimit), and
  every process started from here (servers, clients) inherits it;
- one redis-server (tests/redis_server.py) and one SQLite file, migrated and seeded
  (tests/daphne_server.py `prepare_database`: embedded SQLite, shared by both nodes, as in
  the cluster tests; PostgreSQL would take the database off these 2 cores' critical path
  only if it ran elsewhere);
- a staff user, and as many shoppers as the largest step needs, created directly in that
  database by one `manage.py shell -c` script run with the servers' environment: each a Cart
  with one line (quantity 1 of a random size in stock), its signed cart cookie and a
  django_session row whose data names the cart (creating 10k carts through HTTP would take
  minutes on 2 cores and is not what is measured). `--shoppers cart` (the default) connects
  with the cart cookie alone, as an anonymous shopper's browser does after its first page
  view (shop/identity.py: no session to read); `--shoppers session` with the session
  cookie, as a logged-in shopper's does (the session is read at every connect);
- two daphne nodes A and B (TRACKER_NODE_NAME a, b) sharing that Redis and that database,
  with the tracker's default timings (broadcast 0.2 s, down 5 s) and DASHBOARD_DIFF_INTERVAL
  0.1 s;
- latency probes: a few shoppers who got their carts from GET / on node A and hold one tab
  each there, and a staff user logged in on B with a dashboard socket on B;
- client processes (this script with `--_client`, several OS processes so that the client
  side is not one Python process's event loop): each holds shopper sockets for one node,
  opened with that cookie and `Origin: http://127.0.0.1:<port>`, each counted once
  its first `cart` message arrived (the server tracks the page right after sending it).
  Client sockets send no pings (as browsers); daphne pings every socket every 20 s (its
  default);
- unless --no-diagnose, bench/_diag/sitecustomize.py on the servers' PYTHONPATH records
  their cyclic-GC pauses (wall clock and CPU, and the objects each full collection walks)
  and event-loop lag (bench only; see that file). The servers run the site's GC policy
  (shop/gc_tuning.py) unless `--server-env GC_TUNING=off`; the report's first line says
  which, as the servers' /metrics do.

Per ramp step (cumulative totals of load sockets, half on each node):
- connect: the new sockets are opened with a bounded number in flight per client process;
  the rate is sockets opened / wall time of the step; per socket, handshake -> first cart
  message latency (p50 / p99); the CPU each node spent per new socket (utime + stime from
  /proc) and its CPU use over the step (1.0 = one core);
- settle: until the staff view on B shows `pages` = sockets held (probes included), at most
  30 s; the time it took is the convergence lag after the burst;
- hold: the load stays connected and idle for `--hold` seconds while the probes on A take
  turns sending add_item / remove_item (one request in flight, 350-650 ms apart) and the
  staff socket on B waits for the diff whose application shows the new quantity: latency
  from just before the send to that diff's arrival, both stamped here (as
  bench/dashboard_bench.py). Probes run during the connect phase as well; those samples
  are reported apart ("while connecting");
- at the end of the hold: RSS of each daphne process (VmRSS) and memory per connection =
  (RSS - baseline) / sockets on that node, the baseline being the node's RSS after start,
  with the probes and staff connected (it therefore also carries the node's share of the
  other node's rows in its tracker replica and of the dashboard aggregates); open file
  descriptors; Redis RSS; whether the staff view's pages, shoppers and item totals equal
  what the clients hold, whether a fresh dashboard snapshot on A does too, and each node's
  own count of open shopper sockets (/metrics, shop_open_shopper_sockets).

The ramp stops early if more than 1% of a step's connects fail, more than 1% of the open
sockets are closed by the servers, a node dies, or a step takes longer than --step-timeout;
the notes under the table then say where and why (failed connects by reason, server log
warnings and errors, GC pauses and loop lag per step, peers seen down, the staff view's
largest fall). Once every socket is closed, each server counts the cyclic garbage it still
holds, frozen or not (what the GC policy must not leak). The last line is the issue's
figure over the ramp (first connect to last hold): the longest collector pause (and its
generation and CPU part), how often a node took its peer for down (the tracker's
warnings), failed connects, and the staff diff p99 while holding. Figures from this
machine are in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.revision import describe, exported  # noqa: E402
from tests.daphne_server import DaphneServer, manage, prepare_database, server_env  # noqa: E402
from tests.live_clients import StaffClient, Tab, Visitor  # noqa: E402
from tests.prometheus_text import Scrape  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

STAFF_USER, STAFF_PASSWORD = "bench-staff", "bench-staff-pw"
DIFF_INTERVAL = 0.1
PATHS = ["/", "/checkout/"] + [f"/products/product-{i}/" for i in range(48)]
LATENCY_TARGET = 0.5  # the p99 target under load
DIAG_DIR = Path(__file__).resolve().parent / "_diag"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# --shoppers: what the load sockets' handshakes carry, in the report's words.
SHOPPERS = {
    "cart": "anonymous shoppers (signed cart cookie, no session)",
    "session": "shoppers with a session cookie (read from the database at each connect)",
}


def raise_nofile() -> tuple[int, int]:
    """Soft open-file limit up to the hard limit; returns (soft, hard) now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# -- the client processes --------------------------------------------------------------------


async def client_main() -> None:
    """A child process holding shopper sockets on command (JSON lines on stdin/stdout)."""
    from websockets.asyncio.client import connect
    from websockets.protocol import State

    raise_nofile()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    sockets: list[Any] = []

    async def open_one(cookie: str, port: int, page: str, within: float, into: dict) -> None:
        started = time.perf_counter()
        try:
            ws = await connect(
                f"ws://127.0.0.1:{port}/ws/cart/?page={page}",
                additional_headers={"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"},
                open_timeout=within,
                ping_interval=None,
                close_timeout=2,
                max_queue=64,
            )
        except Exception as error:  # refused, timed out, rejected handshake
            into["errors"][f"connect: {type(error).__name__} {str(error)[:60]}"] += 1
            return
        try:
            first = json.loads(await asyncio.wait_for(ws.recv(), within))
            if first.get("type") != "cart":
                raise RuntimeError(f"first message {first.get('type')}/{first.get('code')}")
        except Exception as error:
            into["errors"][f"first message: {type(error).__name__} {str(error)[:60]}"] += 1
            ws.transport.abort()
            return
        into["latencies"].append(time.perf_counter() - started)
        sockets.append(ws)

    while line := await reader.readline():
        cmd = json.loads(line)
        reply: dict[str, Any] = {}
        if cmd["op"] == "open":
            gate = asyncio.Semaphore(cmd["concurrency"])
            result: dict[str, Any] = {"errors": collections.Counter(), "latencies": []}

            async def gated(
                cookie: str, port: int, page: str, result=result, gate=gate,
                within=cmd["within"],
            ) -> None:
                async with gate:
                    await open_one(cookie, port, page, within, result)

            started = time.perf_counter()
            await asyncio.gather(*(gated(*s) for s in cmd["sessions"]))
            reply = {
                "elapsed": time.perf_counter() - started,
                "opened": len(result["latencies"]),
                "errors": dict(result["errors"]),
                "latencies": result["latencies"],
            }
        elif cmd["op"] == "status":
            closed = collections.Counter(
                str(ws.close_code) for ws in sockets if ws.state is not State.OPEN
            )
            reply = {"open": sum(ws.state is State.OPEN for ws in sockets),
                     "closed": dict(closed)}
        elif cmd["op"] == "close":
            for ws in sockets:
                ws.transport.abort()
            sockets.clear()
            reply = {"closed": True}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        if cmd["op"] == "close":
            return


class Client:
    """The main process's handle on one client process: a benchmark script run with
    `--_client` (this one's by default), spoken to in JSON lines, one reply per command;
    `index`-th of the run, holding sockets of `node`."""

    def __init__(
        self, index: int, node: DaphneServer, script: str = __file__, nice: int = 0
    ) -> None:
        self.index = index
        self.node = node
        self.node_name = "ab"[index % 2]  # the benchmarks' nodes alternate: a, b, a, ...
        self.script = script
        self.nice = nice  # added to the process's niceness: lower priority than the nodes
        self.process: asyncio.subprocess.Process | None = None
        self.lock = asyncio.Lock()

    async def start(self) -> Client:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, self.script, "--_client",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, limit=64 * 1024 * 1024,
            preexec_fn=(lambda: os.nice(self.nice)) if self.nice else None,
        )  # fmt: skip
        return self

    async def call(self, **cmd: Any) -> dict[str, Any]:
        async with self.lock:
            assert self.process is not None and self.process.stdin and self.process.stdout
            self.process.stdin.write((json.dumps(cmd) + "\n").encode())
            await self.process.stdin.drain()
            line = await self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"client process {self.index} (node {self.node_name}) died")
            return json.loads(line)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid) if self.process else 0.0

    async def close(self) -> None:
        if self.process is None:
            return
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.call(op="close"), 10)
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        await self.process.wait()


# -- /proc -----------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE_SIZE


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def nofile_limit(pid: int) -> str:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return f"{soft}/{hard}"
    return "?"


def metrics(node: DaphneServer) -> Scrape | None:
    try:
        with urllib.request.urlopen(node.url + "/metrics", timeout=10) as response:
            return Scrape(response.read().decode())
    except OSError:
        return None


def gc_policy(scrape: Scrape | None) -> str:
    """The collector's policy a server reports (/metrics, shop/gc_tuning.py)."""
    if scrape is None:
        return "unknown (no /metrics)"
    threshold = ",".join(
        f"{scrape.value('gc_threshold', generation=str(g)):.0f}" for g in range(3)
    )
    if scrape.value("gc_tuning"):
        return f"site's GC policy on (GC_TUNING), thresholds {threshold}"
    return f"site's GC policy off, thresholds {threshold}"


def load1() -> float:
    return os.getloadavg()[0]


# -- setup -----------------------------------------------------------------------------------


SETUP_SCRIPT = """
import json, random, uuid
from datetime import timedelta
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.db import transaction
from django.utils import timezone
from django.conf import settings
from django.utils.crypto import get_random_string
from shop.identity import cart_cookie_value
from shop.models import Cart, CartItem, Item

N, PROBES, OUT = {n}, {probes}, {out!r}
get_user_model().objects.create_user({user!r}, password={password!r}, is_staff=True)
sizes = list(Item.objects.filter(stock__gte=5, product__released=True)
             .order_by("-stock", "pk").values_list("pk", flat=True))
probe_items, load_items = sizes[:PROBES], sizes[PROBES:]
rng = random.Random(5)
carts = [Cart(id=uuid.uuid4()) for _ in range(N)]
store = SessionStore()
expire = timezone.now() + timedelta(days=30)
alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
keys = [get_random_string(32, alphabet) for _ in range(N)]
lines = [CartItem(cart=c, item_id=rng.choice(load_items), quantity=1) for c in carts]
with transaction.atomic():
    Cart.objects.bulk_create(carts, batch_size=500)
    CartItem.objects.bulk_create(lines, batch_size=500)
    Session.objects.bulk_create(
        [Session(session_key=k, session_data=store.encode({{"cart_id": str(c.id)}}),
                 expire_date=expire) for k, c in zip(keys, carts)],
        batch_size=500,
    )
cookies = {{
    "cart": [f"{{settings.CART_COOKIE_NAME}}={{cart_cookie_value(str(c.id))}}" for c in carts],
    "session": [f"{{settings.SESSION_COOKIE_NAME}}={{k}}" for k in keys],
}}
json.dump({{"cookies": cookies, "probe_items": probe_items}}, open(OUT, "w"))
"""


def create_sessions(env: dict[str, str], n: int, probes: int, out: Path) -> dict[str, Any]:
    script = SETUP_SCRIPT.format(
        n=n, probes=probes, out=str(out), user=STAFF_USER, password=STAFF_PASSWORD
    )
    manage("shell", "-c", script, env=env)
    return json.loads(out.read_text())


# -- staff view and probes -------------------------------------------------------------------


class StaffWatch:
    """Reads the staff socket all the time (one reader) and resolves waiters with the
    arrival time of the diff after which their condition first holds."""

    def __init__(self, view: StaffClient) -> None:
        self.view = view
        self.waiters: list[tuple[Any, asyncio.Future]] = []
        self.stopping = False
        self.error: str | None = None
        self.pages: list[tuple[float, int]] = []  # (unix time, pages) at every change
        self.task = asyncio.create_task(self._run())

    def _check(self, view: StaffClient) -> bool:
        arrived = view.diffs[-1].arrived if view.diffs else time.perf_counter()
        pages = view.stats.get("pages")
        if pages is not None and (not self.pages or self.pages[-1][1] != pages):
            self.pages.append((time.time(), pages))
        for waiter in list(self.waiters):
            condition, future = waiter
            if future.done():
                self.waiters.remove(waiter)
            elif condition(view):
                future.set_result(arrived)
                self.waiters.remove(waiter)
        return self.stopping

    async def _run(self) -> None:
        while not self.stopping:
            try:
                await self.view.until(self._check, within=3600)
            except AssertionError:
                continue
            except ConnectionError as error:
                self.error = f"{error} at {time.strftime('%H:%M:%S')}"
                say(f"  the staff socket on B closed: {self.error}")
                return

    def wait(self, condition) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.waiters.append((condition, future))
        return future

    async def until(self, condition, within: float) -> float | None:
        """Seconds until condition holds (None: not within)."""
        started = time.perf_counter()
        if condition(self.view):
            return 0.0
        try:
            await asyncio.wait_for(self.wait(condition), within)
        except TimeoutError:
            return None
        return time.perf_counter() - started

    async def close(self) -> None:
        self.stopping = True
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.view.abort()


@dataclass
class Probe:
    tab: Tab
    item: int
    held: int = 0


@dataclass
class Sample:
    phase: str
    latency: float  # add_item sent -> staff diff showing it
    reply: float  # add_item sent -> the shopper's own ok
    at: float = 0.0  # unix time of the send


@dataclass
class Prober:
    probes: list[Probe]
    watch: StaffWatch
    spacing: float
    jitter: float
    phase: str = "warm-up"
    samples: list[Sample] = field(default_factory=list)
    lost: collections.Counter = field(default_factory=collections.Counter)
    stopping: bool = False
    # Held while a request is in flight; the end-of-step check holds it so that what the
    # probes hold cannot change while the views are compared with it.
    turn_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def run(self) -> None:
        rng = random.Random(7)
        turn = 0
        while not self.stopping:
            await asyncio.sleep(self.spacing + rng.random() * self.jitter)
            async with self.turn_lock:
                await self.one_turn(self.probes[turn % len(self.probes)])
            turn += 1

    async def one_turn(self, probe: Probe) -> None:
        """One add_item or remove_item, timed until the staff view shows it."""
        probe.held = 1 - probe.held
        key, quantity = str(probe.item), probe.held
        phase = self.phase
        arrived = self.watch.wait(lambda v, k=key, q=quantity: v.stats["items"].get(k, 0) == q)
        kind = "add_item" if quantity else "remove_item"
        started, at = time.perf_counter(), time.time()
        try:
            request_id = await probe.tab.send({"type": kind, "item_id": probe.item})
            await probe.tab.reply(request_id, 10)
            replied = probe.tab.arrived - started
            seen = await asyncio.wait_for(arrived, 10)
        except (TimeoutError, AssertionError, ConnectionError) as error:
            self.lost[f"{phase}: {type(error).__name__}"] += 1
            arrived.cancel()
            return
        self.samples.append(Sample(phase, seen - started, replied, at))

    def of(self, phase: str) -> list[Sample]:
        return [s for s in self.samples if s.phase == phase]


def pct(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered) - 1e-9)) - 1]


def ms(values: list[float], fraction: float) -> str:
    return f"{pct(values, fraction) * 1000:.0f}" if values else "—"


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Step:
    target: int
    held: int = 0
    added: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    connect_latencies: list[float] = field(default_factory=list)
    cpu_per_connect: dict[str, float] = field(default_factory=dict)
    cpu_use: dict[str, float] = field(default_factory=dict)
    client_cpu_use: float = 0.0
    settle: float | None = None
    rss: dict[str, int] = field(default_factory=dict)
    per_conn: dict[str, float] = field(default_factory=dict)
    fds: dict[str, int] = field(default_factory=dict)
    redis_rss: int = 0
    on_node: dict[str, int] = field(default_factory=dict)
    gauge: dict[str, float | None] = field(default_factory=dict)
    peers_down: dict[str, float | None] = field(default_factory=dict)
    view: dict[str, Any] = field(default_factory=dict)
    fresh_a: dict[str, Any] = field(default_factory=dict)
    expected: dict[str, Any] = field(default_factory=dict)
    closed: dict[str, int] = field(default_factory=dict)
    load: float = 0.0
    stop_reason: str | None = None
    connect_window: tuple[float, float] = (0.0, 0.0)  # unix times
    hold_window: tuple[float, float] = (0.0, 0.0)
    hold_cpu: dict[str, float] = field(default_factory=dict)
    fresh_seconds: float = 0.0
    snapshot_bytes: int = 0
    dip: tuple[int, float] = (0, 0.0)

    @property
    def exact(self) -> bool:
        return self.view == self.expected

    @property
    def fresh_exact(self) -> bool:
        return self.fresh_a == self.expected


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def log_findings(path: Path) -> dict[str, int]:
    """Warnings, errors and tracebacks in a server log, by their message (numbers and
    addresses blanked so that repeats count together)."""
    found: collections.Counter = collections.Counter()
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    for line in text.splitlines():
        if " WARNING " in line or " ERROR " in line or line.startswith(("Traceback", "ERROR")):
            message = line.split(": ", 1)[-1] if " WARNING " in line or " ERROR " in line else line
            found[re.sub(r"0x[0-9a-f]+|\d+", "#", message)[:120]] += 1
    return dict(found.most_common(8))


def summary_of(stats: dict[str, Any]) -> dict[str, Any]:
    return {
        "shoppers": stats.get("shoppers"),
        "pages": stats.get("pages"),
        "items": sum(stats.get("items", {}).values()),
    }


async def run(args: argparse.Namespace) -> tuple[list[Step], dict[str, Any]]:
    info: dict[str, Any] = {"nofile": raise_nofile(), "load_start": load1()}
    steps = [int(s) for s in args.steps.split(",")]
    total = max(steps)
    # Every load socket comes from 127.0.0.1: no per-address limit (shop/socket_limits.py).
    env = {"DASHBOARD_DIFF_INTERVAL": str(DIFF_INTERVAL), "SHOPPER_SOCKETS_PER_ADDRESS": "0"}
    results: list[Step] = []
    with contextlib.ExitStack() as stack:
        base = Path(tempfile.mkdtemp(prefix="load-bench-"))
        info["base"] = base
        if not args.keep:
            stack.callback(shutil.rmtree, base, True)
        code = ROOT if args.site is None else stack.enter_context(exported(args.site))
        info["site"] = "this checkout" if args.site is None else describe(args.site)
        say(f"setup in {base}: database, {total:,} sessions with carts, redis, two nodes")
        database = prepare_database(base / "db.sqlite3")
        t0 = time.monotonic()
        made = create_sessions(server_env(base, database), total, args.probes,
                               base / "sessions.json")
        info["sessions_seconds"] = time.monotonic() - t0
        redis = RedisServer().start()
        stack.callback(redis.kill)
        nodes: dict[str, DaphneServer] = {}
        for name in ("a", "b"):
            extra = {**env, "TRACKER_NODE_NAME": name}
            if args.diagnose or args.server_gc_threshold:
                extra["PYTHONPATH"] = os.pathsep.join(
                    [str(DIAG_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
                )
            if args.diagnose:
                extra["LOAD_BENCH_DIAG"] = str(base / f"diag-{name}.json")
            if args.server_gc_threshold:
                extra["LOAD_BENCH_GC_THRESHOLD"] = args.server_gc_threshold
            extra.update(args.server_env)
            node = DaphneServer(
                database, redis_url=redis.url, env=extra, var_dir=base / name, code=code
            )
            stack.callback(node.stop, 5)
            nodes[name] = node.start()
        info["server_nofile"] = {n: nofile_limit(s.process.pid) for n, s in nodes.items()}
        info["logs"] = {n: str(s.log_path) for n, s in nodes.items()}
        a, b = nodes["a"], nodes["b"]

        # Probes on A, staff on B.
        probes = []
        for item in made["probe_items"]:
            visitor = Visitor(a.url)
            await asyncio.to_thread(visitor.get, "/")
            probes.append(Probe(await visitor.open_tab(a, "/probe/"), item))
        staff = Visitor(b.url)
        await asyncio.to_thread(staff.login, STAFF_USER, STAFF_PASSWORD)
        watch = StaffWatch(await staff.open_dashboard(b))
        if await watch.until(lambda v: v.stats["pages"] == len(probes), 20) is None:
            raise RuntimeError(f"the staff view never showed the probes: {watch.view.stats}")
        await asyncio.sleep(2)
        baseline = {n: rss_bytes(s.process.pid) for n, s in nodes.items()}
        info["baseline_rss"] = baseline
        info["gc_policy"] = gc_policy(await asyncio.to_thread(metrics, a))
        info["baseline_fds"] = {n: open_fds(s.process.pid) for n, s in nodes.items()}
        info["redis_baseline"] = rss_bytes(redis.process.pid)

        clients = [Client(i, nodes["ab"[i % 2]]) for i in range(args.clients)]
        for client in clients:
            await client.start()

        async def close_clients() -> None:
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

        prober = Prober(probes, watch, args.spacing, args.jitter)
        probe_task = asyncio.create_task(prober.run())
        cookies = made["cookies"][args.shoppers]
        try:
            opened = 0
            held_by_node = {"a": 0, "b": 0}
            for target in steps:
                step = Step(target)
                results.append(step)
                new = list(range(opened, target))
                batches: dict[int, list] = {c.index: [] for c in clients}
                for i in new:
                    client = clients[i % len(clients)]
                    batches[client.index].append(
                        [cookies[i], client.node.port, PATHS[i % len(PATHS)]]
                    )
                prober.phase = f"connect {target}"
                say(f"step {target:,}: opening {len(new):,} sockets "
                    f"(load average {load1():.2f})")
                cpu0 = {n: cpu_seconds(s.process.pid) for n, s in nodes.items()}
                client_cpu0 = sum(c.cpu_seconds() for c in clients)
                step.connect_window = (time.time(), 0.0)
                started = time.perf_counter()
                try:
                    replies = await asyncio.wait_for(
                        asyncio.gather(*(
                            c.call(op="open", sessions=batches[c.index],
                                   concurrency=args.concurrency, within=args.connect_timeout)
                            for c in clients
                        )),
                        args.step_timeout,
                    )
                except TimeoutError:
                    step.stop_reason = f"step not done within {args.step_timeout:g} s"
                    replies = []
                step.elapsed = time.perf_counter() - started
                step.connect_window = (step.connect_window[0], time.time())
                cpu1 = {n: cpu_seconds(s.process.pid) for n, s in nodes.items()}
                step.client_cpu_use = (
                    sum(c.cpu_seconds() for c in clients) - client_cpu0
                ) / step.elapsed
                errors: collections.Counter = collections.Counter()
                per_node_added = {"a": 0, "b": 0}
                for client, reply in zip(clients, replies, strict=False):
                    step.added += reply["opened"]
                    per_node_added["ab"[client.index % 2]] += reply["opened"]
                    step.failed += sum(reply["errors"].values())
                    errors.update(reply["errors"])
                    step.connect_latencies += reply["latencies"]
                step.errors = dict(errors)
                for n in nodes:
                    used = cpu1[n] - cpu0[n]
                    step.cpu_use[n] = used / step.elapsed
                    if per_node_added[n]:
                        step.cpu_per_connect[n] = used / per_node_added[n]
                    held_by_node[n] += per_node_added[n]
                opened = target

                dead = [n for n, s in nodes.items() if not s.running]
                if dead:
                    step.stop_reason = f"node {', '.join(dead)} died"
                elif step.failed > 0.01 * max(1, len(new)):
                    step.stop_reason = step.stop_reason or (
                        f"{step.failed} of {len(new)} connects failed"
                    )

                # Settle: the staff view shows every socket held.
                statuses = await asyncio.gather(*(c.call(op="status") for c in clients))
                held = sum(s["open"] for s in statuses) + len(probes)
                prober.phase = f"settle {target}"
                step.settle = await watch.until(
                    lambda v, h=held: v.stats["pages"] == h, args.settle_timeout
                )
                prober.phase = f"hold {target}"
                say(f"  {step.added:,} opened in {step.elapsed:.1f} s, {step.failed} failed; "
                    f"staff view exact after "
                    f"{'-' if step.settle is None else f'{step.settle:.1f} s'}; "
                    f"holding {args.hold:g} s")
                hold_cpu0 = {n: cpu_seconds(s.process.pid) for n, s in nodes.items()}
                step.hold_window = (time.time(), 0.0)
                await asyncio.sleep(args.hold)
                step.hold_window = (step.hold_window[0], time.time())
                for n, s in nodes.items():
                    step.hold_cpu[n] = (cpu_seconds(s.process.pid) - hold_cpu0[n]) / args.hold
                prober.phase = f"check {target}"

                # End of the hold: memory, counts, exactness, with no probe request in flight
                # (what the probes hold is part of the expected figures).
                await prober.turn_lock.acquire()
                statuses = await asyncio.gather(*(c.call(op="status") for c in clients))
                step.on_node = {"a": len(probes), "b": 0}
                closed: collections.Counter = collections.Counter()
                for client, status in zip(clients, statuses, strict=True):
                    step.on_node["ab"[client.index % 2]] += status["open"]
                    closed.update(status["closed"])
                step.closed = dict(closed)
                step.held = sum(step.on_node.values())
                for n, s in nodes.items():
                    if not s.running:
                        continue
                    step.rss[n] = rss_bytes(s.process.pid)
                    step.fds[n] = open_fds(s.process.pid)
                    load_here = step.on_node[n] - (len(probes) if n == "a" else 0)
                    if load_here:
                        step.per_conn[n] = (step.rss[n] - baseline[n]) / load_here
                    scrape = await asyncio.to_thread(metrics, s)
                    step.gauge[n] = scrape.value("shop_open_shopper_sockets") if scrape else None
                    step.peers_down[n] = (
                        scrape.value("tracker_peers", status="down") if scrape else None
                    )
                step.redis_rss = rss_bytes(redis.process.pid)
                probe_quantity = sum(p.held for p in probes)
                step.expected = {
                    "shoppers": step.held,
                    "pages": step.held,
                    "items": step.held - len(probes) + probe_quantity,
                }
                # The last probe's diff may still be on its way to B: wait for it.
                await watch.until(lambda v, e=step.expected: summary_of(v.stats) == e, 3)
                step.view = summary_of(watch.view.stats)
                # What a fresh snapshot of these aggregates weighs on the wire (its catalogue
                # and 15-minute history aside).
                step.snapshot_bytes = len(json.dumps(watch.view.stats))
                asked = time.perf_counter()
                try:
                    fresh = await staff.open_dashboard(a, within=20)
                    step.fresh_a = summary_of(fresh.stats)
                    await fresh.close()
                except Exception as error:  # noqa: BLE001 - reported, not raised
                    step.fresh_a = {"error": f"{type(error).__name__}: {error}"}
                step.fresh_seconds = time.perf_counter() - asked
                prober.turn_lock.release()
                step.load = load1()
                step.dip = dip(watch.pages, (step.connect_window[0], step.hold_window[1]))
                say(f"  held {step.held:,}; staff view {step.view}, expected {step.expected}; "
                    f"RSS a {step.rss.get('a', 0) / 2**20:.0f} MiB, "
                    f"b {step.rss.get('b', 0) / 2**20:.0f} MiB")
                dropped = sum(step.closed.values())
                if dropped > 0.01 * step.held and not step.stop_reason:
                    step.stop_reason = f"{dropped} open sockets closed by the server"
                if step.stop_reason:
                    break
        finally:
            prober.stopping = True
            probe_task.cancel()
            await asyncio.gather(probe_task, return_exceptions=True)
            info["probe_lost"] = dict(prober.lost)
            info["staff_error"] = watch.error
            info["samples"] = prober.samples
            await close_clients()
            await watch.close()
            for probe in probes:
                await probe.tab.abort()
            if args.diagnose:
                await check_garbage(nodes, base)
            say("stopping servers")
            info["diag"] = {n: read_json(base / f"diag-{n}.json") for n in ("a", "b")}
            (base / "samples.json").write_text(json.dumps([vars(s) for s in prober.samples]))
            (base / "staff_pages.json").write_text(json.dumps(watch.pages))
            info["log_findings"] = {n: log_findings(s.log_path) for n, s in nodes.items()}
            info["downs"] = {n: peers_taken_for_down(s.log_path) for n, s in nodes.items()}
        info["load_end"] = load1()
    return results, info


async def check_garbage(nodes: dict[str, DaphneServer], base: Path) -> None:
    """Once every socket is closed: what cyclic garbage each server still holds, frozen
    (never to be freed) or not (bench/_diag/sitecustomize.py, SIGUSR2)."""
    say("all sockets closed; counting the servers' cyclic garbage")
    await asyncio.sleep(5)  # daphne forgets closed connections within a few seconds
    for name, node in nodes.items():
        if not node.running:
            continue
        node.process.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if "garbage" in (read_json(base / f"diag-{name}.json") or {}):
                break
            await asyncio.sleep(0.5)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the report ------------------------------------------------------------------------------


def mib(value: float) -> str:
    return f"{value / 2**20:.0f}"


def diag_window(diag: dict[str, Any] | None, window: tuple[float, float]) -> str:
    """Full GC collections and event-loop lag of one server within a window of time."""
    if not diag:
        return "no diagnostics"
    start, end = window
    full = [took for t, took, *_ in diag["full"] if start <= t <= end]
    walked = [entry[3] for entry in diag["full"] if start <= entry[0] <= end and len(entry) > 3]
    lags = [lag for t, lag in diag["lag"] if start <= t <= end]
    over = sum(1 for lag in lags if lag > 0.1)
    return (
        f"{len(full)} full GCs (max {max(full, default=0) * 1000:.0f} ms, total "
        f"{sum(full):.1f} s, walking up to {max(walked, default=0):,} objects), loop lag max "
        f"{max(lags, default=0) * 1000:.0f} ms, "
        f"{over} samples > 100 ms"
    )


def dip(pages: list[tuple[float, int]], window: tuple[float, float]) -> tuple[int, float]:
    """The staff view's largest fall of `pages` below its running maximum within a window
    (the load only grows during a ramp: a fall is sockets lost or a peer taken for down),
    and how long it stayed below that maximum."""
    start, end = window
    top, worst, since, lasted = 0, 0, None, 0.0
    for t, value in pages:
        if t > end:
            break
        if value >= top:
            if since is not None and t >= start:
                lasted = max(lasted, t - since)
            top, since = value, None
            continue
        if t >= start:
            worst = max(worst, top - value)
            since = since if since is not None else t
    if since is not None:
        lasted = max(lasted, end - since)
    return worst, lasted


def longest_by_generation(
    diag: dict[str, Any] | None, window: tuple[float, float]
) -> dict[int, tuple[float, float]]:
    """The longest collection per generation within a window (those over 10 ms only): wall
    clock and CPU seconds."""
    longest: dict[int, tuple[float, float]] = {}
    for t, generation, took, *cpu in (diag or {}).get("long", []):
        if window[0] <= t <= window[1] and took > longest.get(generation, (0.0, 0.0))[0]:
            longest[generation] = (took, cpu[0] if cpu else float("nan"))
    return longest


def peers_taken_for_down(log_path: Path) -> list[float]:
    """When a node's tracker took a peer for down (its warning, once per shard), in unix
    time."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return []
    found = re.findall(
        r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ WARNING tracker: replica \S+ down \(silent",
        text,
        re.MULTILINE,
    )
    # The servers log local time (whole seconds here).
    return [time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) for stamp in found]


def longest_gc(diag: dict[str, Any] | None, step: Step) -> float:
    """The longest full collection of a server from the step's connects to its hold's end."""
    if not diag:
        return float("nan")
    start, end = step.connect_window[0], step.hold_window[1]
    return max((took for t, took, *_ in diag["full"] if start <= t <= end), default=0.0)


def report(steps: list[Step], info: dict[str, Any], args: argparse.Namespace) -> list[str]:
    samples: list[Sample] = info["samples"]
    lines = [
        f"Shopper sockets held by two daphne nodes (one Redis, one SQLite file), ramp "
        f"{args.steps}, {args.clients} client processes, {args.concurrency} connects in "
        f"flight per client, hold {args.hold:g} s per step; {SHOPPERS[args.shoppers]}; site: "
        f"{info['site']}; servers: {info['gc_policy']}"
        + (f", environment {args.server_env}" if args.server_env else ""),
        "",
        "| sockets held (target) | connect rate /s | connect p50 / p99 ms | CPU ms per connect "
        "A / B | node CPU while connecting A / B | RSS MiB A / B | KiB per socket A / B | "
        "staff diff p50 / p99 ms, held (n) | p99 ms while connecting (n) | longest full GC "
        "s, A / B | staff view on B = held | fresh snapshot on A (its stats' size) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for step in steps:
        held = [s.latency for s in samples if s.phase == f"hold {step.target}"]
        connecting = [s.latency for s in samples if s.phase == f"connect {step.target}"]
        rate = step.added / step.elapsed if step.elapsed else 0
        cpu = " / ".join(f"{step.cpu_per_connect.get(n, 0) * 1000:.1f}" for n in "ab")
        use = " / ".join(f"{step.cpu_use.get(n, 0):.2f}" for n in "ab")
        rss = " / ".join(mib(step.rss.get(n, 0)) for n in "ab")
        per = " / ".join(f"{step.per_conn.get(n, 0) / 1024:.0f}" for n in "ab")
        exact = "yes" if step.exact else f"NO: {step.view}"
        if step.fresh_exact:
            fresh = "= held"
        elif "error" in step.fresh_a:
            fresh = f"FAILED: {step.fresh_a['error'][:60]}"
        else:
            fresh = f"NO: {step.fresh_a}"
        fresh += f" ({step.snapshot_bytes / 1024:,.0f} KiB)"
        longest = " / ".join(
            f"{longest_gc(info.get('diag', {}).get(n), step):.1f}" for n in "ab"
        )
        lines.append(
            f"| {step.held:,} ({step.target:,} + {args.probes}) | {rate:.0f} | "
            f"{ms(step.connect_latencies, 0.5)} / {ms(step.connect_latencies, 0.99)} | {cpu} | "
            f"{use} | {rss} | {per} | {ms(held, 0.5)} / {ms(held, 0.99)} ({len(held)}) | "
            f"{ms(connecting, 0.99)} ({len(connecting)}) | {longest} | {exact} | {fresh} |"
        )
    all_held = [s.latency for s in samples if s.phase.startswith("hold ")]
    lines += [""]
    if all_held:
        p99 = pct(all_held, 0.99)
        lines.append(
            f"Staff diff latency over every hold: p50 {ms(all_held, 0.5)} ms, p99 "
            f"{ms(all_held, 0.99)} ms, max {max(all_held) * 1000:.0f} ms (n={len(all_held)}); "
            f"target p99 < {LATENCY_TARGET * 1000:.0f} ms: "
            f"{'pass' if p99 < LATENCY_TARGET else 'MISS'}. The probe's own ok: p50 "
            f"{ms([s.reply for s in samples if s.phase.startswith('hold ')], 0.5)} / p99 "
            f"{ms([s.reply for s in samples if s.phase.startswith('hold ')], 0.99)} ms."
        )
    lines.append("")
    lines.append("Per step, end of hold:")
    for step in steps:
        gauge = ", ".join(f"{n} {step.gauge.get(n)}" for n in "ab")
        lines.append(
            f"- {step.target:,}: held {step.held:,} (A {step.on_node.get('a', 0):,}, B "
            f"{step.on_node.get('b', 0):,}); servers' own shop_open_shopper_sockets: {gauge}; "
            f"staff view on B {step.view}, fresh snapshot on A {step.fresh_a}, expected "
            f"{step.expected}; view exact {'-' if step.settle is None else f'{step.settle:.1f}'}"
            f" s after the last connect; open fds A {step.fds.get('a')}, B {step.fds.get('b')};"
            f" Redis RSS {mib(step.redis_rss)} MiB; client processes' CPU while connecting "
            f"{step.client_cpu_use:.2f} cores; peers down seen A {step.peers_down.get('a')}, "
            f"B {step.peers_down.get('b')}; node CPU while holding (idle sockets) A "
            f"{step.hold_cpu.get('a', 0):.2f}, B {step.hold_cpu.get('b', 0):.2f} cores; "
            f"fresh snapshot on A took {step.fresh_seconds:.1f} s; largest fall of the staff "
            f"view's pages below their running maximum: {step.dip[0]:,} "
            f"(below it for {step.dip[1]:.1f} s); load average {step.load:.2f}"
            + (f"; failed connects {step.errors}" if step.errors else "")
            + (f"; client sockets closed by the server {step.closed}" if step.closed else "")
            + (f"; STOPPED: {step.stop_reason}" if step.stop_reason else "")
        )
    if info.get("diag") and any(info["diag"].values()):
        lines += ["", "Server diagnostics (bench/_diag/sitecustomize.py), per step:"]
        for step in steps:
            for n in "ab":
                longest = longest_by_generation(
                    info["diag"][n], (step.connect_window[0], step.hold_window[1])
                )
                lines.append(
                    f"- {step.target:,}, node {n.upper()}: connecting: "
                    f"{diag_window(info['diag'][n], step.connect_window)}; holding: "
                    f"{diag_window(info['diag'][n], step.hold_window)}; longest collection "
                    "per generation: "
                    + (
                        ", ".join(
                            f"gen {g} {t * 1000:.0f} ms ({cpu * 1000:.0f} ms CPU)"
                            for g, (t, cpu) in sorted(longest.items())
                        )
                        or "none over 10 ms"
                    )
                )
        for n in "ab":
            d = info["diag"][n]
            if d:
                gcs = ", ".join(
                    f"gen {g}: {c} in {t:.1f} s (max {m * 1000:.0f} ms)"
                    for g, (c, t, m) in d["gc"].items()
                )
                lines.append(f"- node {n.upper()} over the whole run: {gcs}; loop lag max "
                             f"{d['lag_max'] * 1000:.0f} ms, mean "
                             f"{d['lag_sum'] / max(1, d['lag_count']) * 1000:.1f} ms")
        for n in "ab":
            garbage = (info["diag"][n] or {}).get("garbage")
            if garbage:
                lines.append(
                    f"- node {n.upper()} after every socket closed: a full collection found "
                    f"{garbage['collected']['objects']:,} objects of cyclic garbage in "
                    f"{garbage['collected']['seconds'] * 1000:.0f} ms; of the "
                    f"{garbage['frozen_objects']:,} objects frozen by the site's GC policy, "
                    f"{garbage['frozen']['objects']:,} were cyclic garbage (never freed while "
                    f"frozen; a pass over all of them took "
                    f"{garbage['frozen']['seconds'] * 1000:.0f} ms); most common: "
                    + ", ".join(f"{t} {c}" for t, c in garbage["frozen"]["types"][:6])
                    + "; most common types still tracked: "
                    + ", ".join(f"{t} {c}" for t, c in garbage.get("live", [])[:8])
                )
    findings = info.get("log_findings") or {}
    for n in "ab":
        if findings.get(n):
            lines.append(f"- node {n.upper()} log: {findings[n]}")
    if args.keep:
        lines.append(f"- servers' logs and files kept in {info['base']}")
    if info.get("staff_error"):
        lines.append(f"- the staff socket on B closed during the run: {info['staff_error']} "
                     "(its view stopped there)")
    soft, hard = info["nofile"]
    lines += [
        "",
        f"Setup: open-file limit {soft}/{hard} (soft/hard; servers "
        f"{info.get('server_nofile')}); {max(s.target for s in steps):,} sessions with carts "
        f"created in the database in {info['sessions_seconds']:.1f} s (not measured); "
        f"baseline RSS A {mib(info['baseline_rss']['a'])} MiB, B "
        f"{mib(info['baseline_rss']['b'])} MiB (probes and staff connected); Redis baseline "
        f"{mib(info['redis_baseline'])} MiB; load average {info['load_start']:.2f} at start, "
        f"{info['load_end']:.2f} at end; probe requests lost: {info['probe_lost'] or 'none'}",
    ]
    lines += ["", summary(steps, info)]
    return lines


def summary(steps: list[Step], info: dict[str, Any]) -> str:
    """The issue's figure in one line: over the ramp (first connect to last hold)."""
    samples: list[Sample] = info["samples"]
    held = [s.latency for s in samples if s.phase.startswith("hold ")]
    window = (steps[0].connect_window[0], steps[-1].hold_window[1]) if steps else (0, 0)
    longest: dict[int, tuple[float, float]] = {}
    for diag in (info.get("diag") or {}).values():
        for generation, pause in longest_by_generation(diag, window).items():
            longest[generation] = max(longest.get(generation, pause), pause)
    if longest:
        generation = max(longest, key=lambda g: longest[g][0])
        took, cpu = longest[generation]
        pause = f"{took * 1000:.0f} ms (gen {generation}; {cpu * 1000:.0f} ms of it CPU)"
    else:
        pause = "under 10 ms" if any((info.get("diag") or {}).values()) else "not measured"
    down = sum(
        1 for times in info["downs"].values() for t in times if window[0] - 1 <= t <= window[1]
    )
    failed = sum(step.failed for step in steps)
    p99 = f"{ms(held, 0.99)} ms" if held else "no samples"
    top = max((s.held for s in steps), default=0)
    return (
        f"SUMMARY at {top:,} sockets: longest collector pause: {pause}, peers taken for "
        f"down: {down}, failed connects: {failed}, staff diff p99: {p99} while holding "
        f"(load average {info['load_start']:.2f} at start, {info['load_end']:.2f} at end)"
    )


def server_variable(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    return name, value


def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} CPUs ({model}), {mem:.1f} GiB, Python "
            f"{sys.version.split()[0]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", default="1000,2500,5000,7500,10000",
                        help="cumulative load sockets per ramp step (half per node)")
    parser.add_argument("--clients", type=int, default=4, help="client processes (even)")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="connects in flight per client process")
    parser.add_argument("--hold", type=float, default=20.0, help="seconds held per step")
    parser.add_argument("--probes", type=int, default=3, help="latency probe shoppers on A")
    parser.add_argument("--spacing", type=float, default=0.35)
    parser.add_argument("--jitter", type=float, default=0.3)
    parser.add_argument("--connect-timeout", type=float, default=20.0)
    parser.add_argument("--settle-timeout", type=float, default=30.0)
    parser.add_argument("--step-timeout", type=float, default=240.0)
    parser.add_argument("--server-gc-threshold", metavar="G0,G1,G2",
                        help="gc.set_threshold in the servers (bench/_diag/sitecustomize.py), "
                        "to test what the cyclic GC costs them; default: Python's")
    parser.add_argument("--server-env", metavar="NAME=VALUE", action="append", default=[],
                        type=server_variable,
                        help="an environment variable of both servers, e.g. GC_TUNING=off "
                        "(repeatable; shop/settings.py lists them)")
    parser.add_argument("--shoppers", choices=sorted(SHOPPERS), default="cart",
                        help="how the load sockets say who they are: 'cart', the signed cart "
                        "cookie of an anonymous shopper (what a browser sends after its first "
                        "page view); 'session', a session cookie (what a logged-in shopper, "
                        "or a session from before the cart cookie, sends)")
    parser.add_argument("--site", metavar="REV",
                        help="serve this git revision's site (bench/revision.py) with this "
                        "checkout's benchmark; default: this checkout")
    parser.add_argument("--keep", action="store_true", help="keep the servers' logs and files")
    parser.add_argument("--diagnose", action=argparse.BooleanOptionalAction, default=True,
                        help="record GC pauses and event-loop lag in the servers "
                        "(bench/_diag/sitecustomize.py)")
    args = parser.parse_args()
    args.server_env = dict(args.server_env)
    if args.clients < 2 or args.clients % 2:
        parser.error("--clients must be even (half of them per node)")

    def terminate(signum, frame) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    started = time.monotonic()
    try:
        steps, info = asyncio.run(run(args))
    except KeyboardInterrupt:
        say("interrupted; everything started here has been stopped")
        return 130
    print(f"\nload benchmark: {machine()}; {time.monotonic() - started:.0f} s; command: "
          f"{' '.join([Path(sys.executable).name, *sys.argv])}\n")
    print("\n".join(report(steps, info, args)))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_client":
        asyncio.run(client_main())
    else:
        sys.exit(main())
