#!/usr/bin/env python
"""Peer comparison (issue 5): join / "who is here" / leave through django-channels-presence's
maintained fork and through our tracker.

    .venv/bin/python bench/presence_peer_bench.py --setup   # once: bench/.venv-peer (PyPI)
    .venv/bin/python bench/presence_peer_bench.py           # N = 1,000 and 5,000, about 4 minutes
    .venv/bin/python bench/presence_peer_bench.py --sizes 1000 --no-postgres   # quicker

Not a test: nothing here asserts; it prints a table.

The peer library lives only in its own virtualenv, `bench/.venv-peer` (created by `--setup`,
or by the first run: Django 5.2, channels 4, channels-redis 4, psycopg 3 and
django-channels-more-than-present 2.0.1 from PyPI). It is not a dependency of the project.
The original `django-channels-presence` 1.0.0 installs but cannot be imported under Django
5.2: its AppConfig is named `rooms` (ImproperlyConfigured: Cannot import 'rooms') and its
signal passes `providing_args`, which Django 4.0 removed (TypeError). The fork 2.0.1 keeps
the same models and API (Room, Presence; RoomManager.add / remove) and runs on Django 5.2
with channels 4.

The workload, the same on both sides, one caller doing one operation at a time:
1. N joins: N distinct channel names (as Channels names them) into one room;
2. "who is here": the room's members listed, repeated (`--lists` times; median, p99);
3. N leaves.

Peer: `Room.objects.add(room, channel_name)` (get_or_create of the room, get_or_create of
the Presence row, then `group_add` on the channel layer, through async_to_sync: the
library's own API does all of it), `room.presence_set.all()` evaluated to a list (the
room object fetched once beforehand, which favours the peer), and
`Room.objects.remove(room, channel_name)` (room and row looked up, `group_discard`, delete).
Anonymous presences (user None). Run in a child process of the peer virtualenv with
minimal settings: a fresh SQLite file with the shop's options (WAL, synchronous=NORMAL,
BEGIN IMMEDIATE, 20 s busy timeout) and, with --postgres (default when 127.0.0.1:5432
answers), PostgreSQL in a database of its own (`presence_peer_bench`, created and dropped
here). Connections are persistent (CONN_MAX_AGE None: no reconnect per operation, which
favours the peer). Two ways of calling it:
- "sync": straight calls from synchronous code (a management command, a SyncConsumer's
  thread); each `async_to_sync(group_add)` then runs a throwaway event loop;
- "async": from an event loop through `database_sync_to_async`, as an AsyncConsumer (ours
  included) calls the database; the library's `async_to_sync` hops back to that loop.
Channel layer: in-memory (the cheapest `group_add`: the peer's best case), and Redis
(channels-redis, as a cluster of nodes would run it). Every combination runs at N up to
--full-matrix (1,000); above it only the peer's fastest ones (SQLite with the in-memory
layer, sync and async; PostgreSQL async), which keeps a run within a few minutes.

Ours: `await tracker.track(channel_name, topic, key, meta)` (key = a user id string,
meta = {"user": None}), `tracker.list(topic)` (every (key, meta) of the topic), `await
tracker.untrack(channel_name, topic, key)`. No database: presences are in memory and
replicated between nodes. Two setups:
- single node in-process (the embedded default: in-process transport, one replica);
- with Redis replication to a second tracker in another OS process (a second node): the
  writer's rates, plus the time from the first join until that replica lists all N (and
  from the first leave until it lists none), and the replica's list latency. A write is
  replicated within one broadcast period (0.2 s, the default), in the background.
A shared database shows the peer's rows to every node once committed, so for the peer the
time until another node sees all joins is the time the joins took.

Ratios are ours / peer's best (the fastest of its setups), per operation. Our setups run
--repeats times (3) and each figure is the median of the runs; the peer's run once each.
The replicated rows' "until the second node lists them all" depends on where the burst
falls in the broadcast period: a burst that takes a few milliseconds then waits up to one
period (0.2 s) for its heartbeat, so at small N that figure is a latency, not a throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEER_VENV = HERE / ".venv-peer"
PEER_REQUIREMENTS = [
    "Django>=5.2,<5.3",
    "channels>=4.2,<5",
    "channels-redis>=4.2,<5",
    "psycopg[binary]>=3.1,<4",
    "django-channels-more-than-present==2.0.1",
]
POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "admin_db": "test"}
PG_DB = "presence_peer_bench"
ROOM = "bench-room"
TOPIC = "room:bench-room"
WARMUP = 200


def channel_name(i: int) -> str:
    """A channel name shaped as Channels makes them (specific.<process>!<connection>)."""
    return f"specific.{0x5EED:08x}!{(i * 2654435761) % 16**12:012x}{i:06d}"


def user_key(i: int) -> str:
    return f"user-{i:07d}"


def pct(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered) - 1e-9)) - 1]


def timed_lists(count_members: Callable[[], int], n: int, times: int) -> list[float]:
    """The durations of `times` calls of "who is here"; each must find all n members."""
    durations = []
    for _ in range(times):
        started = time.perf_counter()
        count = count_members()
        durations.append(time.perf_counter() - started)
        assert count == n, count
    return durations


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the peer (runs in bench/.venv-peer) -----------------------------------------------------


def peer_child(options: dict[str, Any]) -> dict[str, Any]:
    import django
    from django.conf import settings

    if options["db"] == "sqlite":
        database = {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": options["path"],
            "CONN_MAX_AGE": None,
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    else:
        database = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": PG_DB,
            "USER": POSTGRES["user"],
            "HOST": POSTGRES["host"],
            "PORT": POSTGRES["port"],
            "CONN_MAX_AGE": None,
        }
    if options["layer"] == "redis":
        layer = {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [options["redis_url"]]},
        }
    else:
        layer = {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    settings.configure(
        DEBUG=False,
        SECRET_KEY="peer-bench",
        USE_TZ=True,
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "channels",
            "channels_presence",
        ],
        DATABASES={"default": database},
        CHANNEL_LAYERS={"default": layer},
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from channels.db import database_sync_to_async
    from channels_presence.models import Presence, Room

    n, lists = options["n"], options["lists"]
    names = [channel_name(i) for i in range(n)]

    def list_room(room: Room) -> int:
        return len(list(room.presence_set.all()))

    def sync_run() -> dict[str, Any]:
        for i in range(WARMUP):  # code paths, connection, statement caches
            Room.objects.add("warm-up", f"warm.{i}")
        for i in range(WARMUP):
            Room.objects.remove("warm-up", f"warm.{i}")
        started = time.perf_counter()
        for name in names:
            Room.objects.add(ROOM, name)
        joins = time.perf_counter() - started
        room = Room.objects.get(channel_name=ROOM)
        list_times = timed_lists(lambda: list_room(room), n, lists)
        started = time.perf_counter()
        for name in names:
            Room.objects.remove(ROOM, name)
        leaves = time.perf_counter() - started
        return {"joins": joins, "leaves": leaves, "lists": list_times}

    async def async_run() -> dict[str, Any]:
        add = database_sync_to_async(Room.objects.add)
        remove = database_sync_to_async(Room.objects.remove)
        for i in range(WARMUP):
            await add("warm-up", f"warm.{i}")
        for i in range(WARMUP):
            await remove("warm-up", f"warm.{i}")
        started = time.perf_counter()
        for name in names:
            await add(ROOM, name)
        joins = time.perf_counter() - started
        room = await database_sync_to_async(Room.objects.get)(channel_name=ROOM)
        list_async = database_sync_to_async(list_room)
        list_times = []
        for _ in range(lists):
            started = time.perf_counter()
            count = await list_async(room)
            list_times.append(time.perf_counter() - started)
            assert count == n, count
        started = time.perf_counter()
        for name in names:
            await remove(ROOM, name)
        leaves = time.perf_counter() - started
        return {"joins": joins, "leaves": leaves, "lists": list_times}

    result = sync_run() if options["mode"] == "sync" else asyncio.run(async_run())
    assert Presence.objects.count() == 0
    from importlib.metadata import version

    import channels_presence

    result["versions"] = {
        name: version(name)
        for name in ("Django", "channels", "channels-redis", "django-channels-more-than-present")
    }
    result["module"] = channels_presence.__file__
    return result


# -- our tracker -----------------------------------------------------------------------------


META = {"user": None}


async def ours_local(n: int, lists: int) -> dict[str, Any]:
    from tracker import LocalBus, Tracker

    tracker = Tracker("peerbench", bus=LocalBus())  # the embedded default, on a bus alone
    await tracker.start()
    try:
        for i in range(WARMUP):
            await tracker.track(f"warm.{i}", "warm-up", user_key(i), META)
        for i in range(WARMUP):
            await tracker.untrack(f"warm.{i}", "warm-up", user_key(i))
        names = [channel_name(i) for i in range(n)]
        keys = [user_key(i) for i in range(n)]
        track, untrack = tracker.track, tracker.untrack
        started = time.perf_counter()
        for name, key in zip(names, keys, strict=True):
            await track(name, TOPIC, key, META)
        joins = time.perf_counter() - started
        list_times = timed_lists(lambda: len(tracker.list(TOPIC)), n, lists)
        started = time.perf_counter()
        for name, key in zip(names, keys, strict=True):
            await untrack(name, TOPIC, key)
        leaves = time.perf_counter() - started
        assert not tracker.list(TOPIC)
    finally:
        await tracker.stop()
    return {"joins": joins, "leaves": leaves, "lists": list_times}


async def replica_child() -> None:
    """A second node: a tracker on Redis that reports when it lists N rows, then none."""
    import logging

    from tracker import Tracker

    logging.getLogger("tracker").setLevel(logging.ERROR)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tracker: Tracker | None = None
    count = 0
    reached: dict[int, float] = {}
    wanted: dict[int, asyncio.Event] = {}

    def on_diff(diff) -> None:
        nonlocal count
        joins, leaves = diff.get(TOPIC, ([], []))
        count += len(joins) - len(leaves)
        if count in wanted and count not in reached:
            reached[count] = time.monotonic()
            wanted[count].set()

    while line := await reader.readline():
        cmd = json.loads(line)
        reply: dict[str, Any] = {}
        if cmd["op"] == "start":
            tracker = Tracker("peerbench", redis_url=cmd["url"])
            tracker.subscribe(on_diff)
            await tracker.start()
            reply["id"] = tracker.replica_id
        elif cmd["op"] == "expect":
            wanted[cmd["count"]] = asyncio.Event()
            reached.pop(cmd["count"], None)
        elif cmd["op"] == "wait":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wanted[cmd["count"]].wait(), cmd["within"])
            reply["at"] = reached.get(cmd["count"])
            reply["listed"] = len(tracker.list(TOPIC))
        elif cmd["op"] == "list":
            times = []
            for _ in range(cmd["times"]):
                started = time.perf_counter()
                listed = len(tracker.list(TOPIC))
                times.append(time.perf_counter() - started)
            reply = {"times": times, "listed": listed}
        elif cmd["op"] == "replicas":
            reply["replicas"] = tracker.replicas()
        elif cmd["op"] == "quit":
            await tracker.stop()
            sys.stdout.write("{}\n")
            sys.stdout.flush()
            return
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


class Replica:
    async def start(self, url: str) -> str:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--_replica",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        return (await self.call(op="start", url=url))["id"]

    async def call(self, **cmd: Any) -> dict[str, Any]:
        self.process.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.process.stdin.drain()
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError("the replica process died")
        return json.loads(line)

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.call(op="quit"), 10)
        except Exception:  # noqa: BLE001 - killed below
            pass
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


async def ours_redis(n: int, lists: int, url: str) -> dict[str, Any]:
    from tracker import Tracker

    replica = Replica()
    peer_id = await replica.start(url)
    tracker = Tracker("peerbench", redis_url=url)
    await tracker.start()
    try:
        deadline = time.monotonic() + 10
        while tracker.replicas().get(peer_id) != "up" or (
            (await replica.call(op="replicas"))["replicas"].get(tracker.replica_id) != "up"
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the two replicas never saw each other up")
            await asyncio.sleep(0.05)
        for i in range(WARMUP):
            await tracker.track(f"warm.{i}", "warm-up", user_key(i), META)
        for i in range(WARMUP):
            await tracker.untrack(f"warm.{i}", "warm-up", user_key(i))
        await asyncio.sleep(0.5)
        names = [channel_name(i) for i in range(n)]
        keys = [user_key(i) for i in range(n)]
        track, untrack = tracker.track, tracker.untrack
        await replica.call(op="expect", count=n)
        first = time.monotonic()
        started = time.perf_counter()
        for name, key in zip(names, keys, strict=True):
            await track(name, TOPIC, key, META)
        joins = time.perf_counter() - started
        seen = await replica.call(op="wait", count=n, within=30)
        if seen["at"] is None:
            raise RuntimeError(f"the replica lists {seen['listed']} of {n} after 30 s")
        joins_seen = seen["at"] - first
        list_times = timed_lists(lambda: len(tracker.list(TOPIC)), n, lists)
        remote = await replica.call(op="list", times=lists)
        assert remote["listed"] == n
        await replica.call(op="expect", count=0)
        first = time.monotonic()
        started = time.perf_counter()
        for name, key in zip(names, keys, strict=True):
            await untrack(name, TOPIC, key)
        leaves = time.perf_counter() - started
        gone = await replica.call(op="wait", count=0, within=30)
        if gone["at"] is None:
            raise RuntimeError(f"the replica still lists {gone['listed']} after 30 s")
        leaves_seen = gone["at"] - first
    finally:
        await tracker.stop()
        await replica.close()
    return {
        "joins": joins, "leaves": leaves, "lists": list_times, "joins_seen": joins_seen,
        "leaves_seen": leaves_seen, "remote_lists": remote["times"],
    }


# -- setup -----------------------------------------------------------------------------------


def peer_python() -> Path:
    return PEER_VENV / "bin" / "python"


def setup_peer_venv() -> None:
    """Create bench/.venv-peer with the peer library (PyPI), once."""
    if peer_python().exists():
        return
    say(f"creating {PEER_VENV} and installing {', '.join(PEER_REQUIREMENTS)}")
    venv.EnvBuilder(with_pip=True, clear=True).create(PEER_VENV)
    subprocess.run(
        [str(peer_python()), "-m", "pip", "install", "--quiet", *PEER_REQUIREMENTS], check=True
    )


def postgres_up() -> bool:
    try:
        with socket.create_connection((POSTGRES["host"], POSTGRES["port"]), timeout=1):
            return True
    except OSError:
        return False


def psql(sql: str) -> None:
    subprocess.run(
        ["psql", "-h", POSTGRES["host"], "-p", str(POSTGRES["port"]), "-U", POSTGRES["user"],
         "-d", POSTGRES["admin_db"], "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
        check=True, capture_output=True, text=True,
    )


def run_peer(options: dict[str, Any]) -> dict[str, Any]:
    result = subprocess.run(
        [str(peer_python()), __file__, "--_peer", json.dumps(options)],
        capture_output=True, text=True, timeout=600,
    )
    if result.returncode != 0:
        raise RuntimeError(f"peer run {options} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- the report ------------------------------------------------------------------------------


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}"


def lat(values: list[float]) -> str:
    def one(v: float) -> str:
        return f"{v * 1e6:,.0f} µs" if v < 1e-3 else f"{v * 1e3:,.1f} ms"

    return f"{one(statistics.median(values))} / {one(pct(values, 0.99))}"


def table(n: int, rows: list[tuple[str, dict[str, Any]]], lists: int) -> list[str]:
    peers = [r for name, r in rows if name.startswith("peer")]
    best_join = min(r["joins"] for r in peers)
    best_leave = min(r["leaves"] for r in peers)
    best_list = min(statistics.median(r["lists"]) for r in peers)
    lines = [
        f"N = {n:,} presences in one room; list repeated {lists} times",
        "",
        "| setup | joins/s | leaves/s | who is here: median / p99 | another node lists all N "
        "joined / none left, after | ratio joins / leaves / list (ours ÷ peer's best) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        if name.startswith("peer"):
            seen = f"{r['joins'] * 1000:,.0f} ms / {r['leaves'] * 1000:,.0f} ms (committed)"
            ratio = "—"
        else:
            seen = "—"
            if "joins_seen" in r:
                seen = f"{r['joins_seen'] * 1000:,.0f} ms / {r['leaves_seen'] * 1000:,.0f} ms"
            ratio = (
                f"{best_join / r['joins']:,.0f}× / {best_leave / r['leaves']:,.0f}× / "
                f"{best_list / statistics.median(r['lists']):,.0f}×"
            )
        lines.append(
            f"| {name} | {rate(n, r['joins'])} | {rate(n, r['leaves'])} | {lat(r['lists'])} | "
            f"{seen} | {ratio} |"
        )
        if "remote_lists" in r:
            lines.append(
                f"| ... the second node's list | | | {lat(r['remote_lists'])} | | |"
            )
        if "joins_seen" in r:
            lines.append(
                f"| ... counted until the second node lists them all | "
                f"{rate(n, r['joins_seen'])} | {rate(n, r['leaves_seen'])} | | | "
                f"{best_join / r['joins_seen']:,.1f}× / {best_leave / r['leaves_seen']:,.1f}× |"
            )
    return lines


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure, the median over the runs (lists: every sample of every run)."""
    merged: dict[str, Any] = {}
    for name, value in runs[0].items():
        if isinstance(value, list):
            merged[name] = [v for run in runs for v in run[name]]
        else:
            merged[name] = statistics.median(run[name] for run in runs)
    return merged


async def ours_all(
    n: int, lists: int, url: str, repeats: int
) -> list[tuple[str, dict[str, Any]]]:
    local = [await ours_local(n, lists) for _ in range(repeats)]
    redis = [await ours_redis(n, lists, url) for _ in range(repeats)]
    return [
        ("ours, single node in-process", median_run(local)),
        ("ours, Redis, replicated to a 2nd node (process)", median_run(redis)),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setup", action="store_true", help="create bench/.venv-peer, exit")
    parser.add_argument("--sizes", default="1000,5000", help="N presences per run")
    parser.add_argument("--lists", type=int, default=50, help="who-is-here repeats")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of our two setups (median of each figure; the peer, about "
                        "a thousand times slower, runs once per setup)")
    parser.add_argument("--full-matrix", type=int, default=1000, metavar="N",
                        help="every peer setup up to this N; above it, only SQLite with the "
                        "in-memory layer (sync, async) and PostgreSQL async")
    parser.add_argument("--postgres", action=argparse.BooleanOptionalAction, default=None,
                        help="also PostgreSQL (default: if 127.0.0.1:5432 answers)")
    args = parser.parse_args()
    setup_peer_venv()
    if args.setup:
        return 0
    sys.path.insert(0, str(ROOT))
    from tests.redis_server import RedisServer

    use_pg = postgres_up() if args.postgres is None else args.postgres
    load_start = os.getloadavg()[0]
    started = time.monotonic()
    redis = RedisServer().start()
    tmp = Path(tempfile.mkdtemp(prefix="peer-bench-"))
    out: list[str] = []
    versions: dict[str, str] = {}
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            rows: list[tuple[str, dict[str, Any]]] = []
            full = n <= args.full_matrix
            setups = [("sqlite", "sync", "memory"), ("sqlite", "async", "memory")]
            if full:
                setups += [("sqlite", "sync", "redis"), ("sqlite", "async", "redis")]
            if use_pg:
                setups += [("postgres", "sync", "memory")] if full else []
                setups += [("postgres", "async", "memory")]
            for db, mode, layer in setups:
                options = {"db": db, "mode": mode, "layer": layer, "n": n,
                           "lists": args.lists, "redis_url": redis.url,
                           "path": str(tmp / f"peer-{n}-{mode}-{layer}.sqlite3")}
                say(f"N={n:,}: peer, {db}, {mode}, {layer} channel layer")
                if db == "postgres":
                    psql(f"DROP DATABASE IF EXISTS {PG_DB}")
                    psql(f"CREATE DATABASE {PG_DB}")
                try:
                    result = run_peer(options)
                finally:
                    if db == "postgres":
                        psql(f"DROP DATABASE IF EXISTS {PG_DB}")
                versions = result.pop("versions")
                rows.append((f"peer, {'SQLite file' if db == 'sqlite' else 'PostgreSQL 15'}, "
                             f"{mode}, {layer} channel layer", result))
            say(f"N={n:,}: ours")
            rows += asyncio.run(ours_all(n, args.lists, redis.url, args.repeats))
            out += table(n, rows, args.lists) + [""]
    finally:
        redis.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\npresence peer comparison: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"{time.monotonic() - started:.0f} s, load average {load_start:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at end; peer: "
          + ", ".join(f"{k} {v}" for k, v in versions.items())
          + f"; command: {' '.join([Path(sys.executable).name, *sys.argv])}\n")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--_peer":
        print(json.dumps(peer_child(json.loads(sys.argv[2]))))
    elif len(sys.argv) > 1 and sys.argv[1] == "--_replica":
        sys.path.insert(0, str(ROOT))
        asyncio.run(replica_child())
    else:
        sys.exit(main())
