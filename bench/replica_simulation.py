#!/usr/bin/env python
"""Many tracker replicas in one event loop over the in-process bus, with churn and loss
(issue 5, scale-out notes).

    .venv/bin/python bench/replica_simulation.py                  # 100 replicas, ~90 s
    .venv/bin/python bench/replica_simulation.py --replicas 30 --seconds 20 --loss 0.1 --seed 7
    .venv/bin/python bench/replica_simulation.py --period 0.2 --silent-periods 5 \
        --down-period 5                                    # the tracker's default timings

Phases:
  start   every replica starts at once and tracks --rows rows; wait until all agree.
  churn   for --seconds: random tracks, updates, untracks and untrack_alls on random live
          replicas (--rate per replica per second), and every --membership-every seconds
          one replica leaves, by a crash (`stop(graceful=False)`) or a graceful stop, in
          turn, and a new replica joins soon after (the count stays at --replicas).
  settle  churn stops; wait until every live replica shows exactly the truth (the union
          of what each live replica itself tracks), then check for --hold seconds that it
          stays so (no ghost comes back).
  join    one silent interval of the quiet cluster, then one from the join of a new
          replica holding --rows rows: what a join costs.

The bus (`tracker.LocalBus`) drops each delivery with probability --loss and delays each
by a random 0..--delay-max seconds (so messages are reordered). Every second it prints
what crossed the bus: publishes by kind (hb: heartbeat with a delta, hb0: empty
heartbeat, tq: transfer request, tx: transfer, bye: goodbye), deliveries (a broadcast
is delivered to every other replica: the bus's `messages` and `bytes` counters), the
trackers' own counters (`status()["shards"][i]["stats"]`, summed over every replica that
ever ran), and whether the event loop keeps up: ticks later than 1.5 x broadcast_period,
the longest tick interval, the longest loop lag seen by a probe that sleeps 20 ms, CPU.
Then a summary table per phase, with figures per broadcast period.

Default timings: broadcast_period 0.5 s, an empty heartbeat every 4 periods (2 s),
down_period 10 s (five silent intervals, the ratio of the tracker's defaults 1 s / 5 s).
One process here does the work of all the nodes: every delivery of every broadcast is
decoded and merged in this one event loop, N(N-1) per round of heartbeats, where a real
node handles N-1. With the tracker's defaults (0.2 s, 1 s, 5 s) 100 replicas do not fit
in one Python process on a 2-core machine (bench/README.md has the figures).

Exit status 1 if the replicas do not converge within --settle-timeout (the diagnosis
and the seed are printed), or if they do not stay converged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import msgpack  # noqa: E402

from tracker import LocalBus, Tracker  # noqa: E402

NAME = "sim"
KINDS = ("hb", "hb0", "tq", "tx", "bye")

# -- the bus, counting by kind ---------------------------------------------------------------


def kind_of(payload: bytes) -> str:
    message = msgpack.unpackb(payload, strict_map_key=False)
    kind = message["t"]
    if kind == "hb" and not message["d"] and not message["x"]:
        return "hb0"
    return kind


class CountingBus(LocalBus):
    """A LocalBus that also counts publishes and deliveries (and their bytes) by kind.
    Publishes are decoded once each (deliveries are not), so counting stays cheap."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.published: Counter[str] = Counter()
        self.published_bytes: Counter[str] = Counter()
        self.delivered: Counter[str] = Counter()
        self.delivered_bytes: Counter[str] = Counter()

    def _route(self, sender, message) -> None:  # noqa: ANN001 - LocalBus's own signature
        kind = kind_of(message.payload)
        messages, size = self.messages, self.bytes
        super()._route(sender, message)
        self.published[kind] += 1
        self.published_bytes[kind] += len(message.payload)
        self.delivered[kind] += self.messages - messages
        self.delivered_bytes[kind] += self.bytes - size


# -- the cluster and its model ---------------------------------------------------------------


@dataclass
class Replica:
    tracker: Tracker
    label: str
    rows: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (topic, conn, key) -> n
    conns: int = 0

    @property
    def id(self) -> str:
        return self.tracker.replica_id


class DownLog(logging.Handler):
    """Counts the tracker's "replica X down" warnings: for a replica still running, a false
    down (a sign that heartbeats were late, or lost five times in a row)."""

    def __init__(self, sim: Simulation) -> None:
        super().__init__(logging.WARNING)
        self.sim = sim
        self.downs = 0
        self.false_downs = 0
        self.lost_goodbyes = 0  # a peer missed a goodbye, found the replica down instead
        self.false: Counter[str] = Counter()
        self.other: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("replica %s down"):
            self.downs += 1
            if record.args[0] in self.sim.live:
                self.false_downs += 1
                self.false[record.args[0]] += 1
            elif record.args[0] in self.sim.graceful:
                self.lost_goodbyes += 1
        else:
            self.other[record.msg] += 1


class Simulation:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.bus = CountingBus(loss=args.loss, delay=(0.0, args.delay_max), seed=args.seed)
        self.options = {
            "broadcast_period": args.period,
            "max_silent_periods": args.silent_periods,
            "down_period": args.down_period,
            "permdown_period": args.permdown_period,
            "clock_sample_periods": args.clock_sample_periods,
            "pool_size": args.pool_size,
        }
        self.topics = [f"page-{i}" for i in range(args.topics)]
        self.live: dict[str, Replica] = {}
        self.stopped: list[Replica] = []
        self.frozen_stats: Counter[str] = Counter()  # summed stats of stopped replicas
        self.made = 0
        self.n = 0
        self.ops: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self.last_leave: dict[str, float] = {}  # "crash" / "graceful stop" -> when, last
        self.graceful: set[str] = set()  # replica ids stopped with a goodbye
        # event-loop health, per report window
        self.tick_intervals: list[float] = []
        self.all_tick_intervals: list[float] = []
        self.max_lag = 0.0
        self.loop = asyncio.get_running_loop()
        self.report: dict[str, Any] = {}

    # -- replicas ------------------------------------------------------------------------

    async def add_replica(self) -> Replica:
        self.made += 1
        tracker = Tracker(NAME, bus=self.bus, **self.options)
        await tracker.start()
        replica = Replica(tracker, f"r{self.made}")
        self.live[replica.id] = replica
        for shard in tracker.shards:
            self._watch_ticks(shard)
        return replica

    def _watch_ticks(self, shard) -> None:  # noqa: ANN001
        tick = shard.tick
        last = [self.loop.time()]

        def timed_tick() -> None:
            now = self.loop.time()
            self.tick_intervals.append(now - last[0])
            last[0] = now
            tick()

        shard.tick = timed_tick  # the ticker calls shard.tick(): the instance attribute wins

    async def remove_replica(self, replica: Replica, *, graceful: bool) -> None:
        del self.live[replica.id]
        how = "graceful stop" if graceful else "crash"
        self.last_leave[how] = self.loop.time()
        if graceful:
            self.graceful.add(replica.id)
        await replica.tracker.stop(graceful=graceful)
        self.stopped.append(replica)
        self.frozen_stats.update(stats_of(replica.tracker))
        self.events[how] += 1

    # -- workload ------------------------------------------------------------------------

    async def op(self, replica: Replica, *, track: bool = False) -> None:
        rng, t, rows = self.rng, replica.tracker, replica.rows
        self.n += 1
        n = self.n
        if track or not rows or rng.random() < (0.6 if len(rows) < self.args.rows else 0.3):
            topic = rng.choice(self.topics)
            key = f"user-{rng.randrange(10_000)}"
            held = {c for (_, c, _) in rows}
            if held and rng.random() < 0.3:
                conn = rng.choice(sorted(held))  # a second row for a connection
            else:
                replica.conns += 1
                conn = f"{replica.label}-c{replica.conns}"
            if (topic, conn, key) in rows:
                return
            await t.track(conn, topic, key, {"conn": conn, "n": n, "page": f"/{topic}"})
            rows[(topic, conn, key)] = n
            self.ops["track"] += 1
            return
        row = rng.choice(list(rows))
        topic, conn, key = row
        roll = rng.random()
        if roll < 0.4:
            await t.update(conn, topic, key, {"conn": conn, "n": n, "page": f"/{topic}"})
            rows[row] = n
            self.ops["update"] += 1
        elif roll < 0.9:
            await t.untrack(conn, topic, key)
            del rows[row]
            self.ops["untrack"] += 1
        else:
            await t.untrack_all(conn)
            for gone in [r for r in rows if r[1] == conn]:
                del rows[gone]
            self.ops["untrack_all"] += 1

    async def churn(self, seconds: float) -> None:
        """Ops as a Poisson process at --rate per live replica; membership changes on a
        schedule, a crash and a graceful stop in turn, each followed by a join."""
        args, rng, loop = self.args, self.rng, self.loop
        step = 0.02
        last = loop.time()
        end = last + seconds
        next_member = loop.time() + args.membership_every
        crash_next = True
        pending_join: float | None = None
        while loop.time() < end:
            now = loop.time()
            # The rate holds in real time: a late loop catches up with a burst.
            expected = args.rate * len(self.live) * (now - last)
            last = now
            count = poisson(rng, expected)
            replicas = list(self.live.values())
            for _ in range(count):
                await self.op(rng.choice(replicas))
            now = loop.time()
            if args.membership_every > 0 and now >= next_member and len(self.live) >= 2:
                next_member = now + args.membership_every
                victim = rng.choice(list(self.live.values()))
                await self.remove_replica(victim, graceful=not crash_next)
                crash_next = not crash_next
                pending_join = now + rng.uniform(0, args.membership_every / 2)
            if pending_join is not None and now >= pending_join:
                pending_join = None
                await self.add_replica()
                self.events["join"] += 1
            await asyncio.sleep(step)
        while len(self.live) < args.replicas:  # the join still due
            await self.add_replica()
            self.events["join"] += 1

    # -- truth and views -----------------------------------------------------------------

    def truth(self) -> set[tuple[str, str, str, int]]:
        return {
            (topic, key, conn, n)
            for replica in self.live.values()
            for (topic, conn, key), n in replica.rows.items()
        }

    def view(self, tracker: Tracker) -> list[tuple[str, str, str, int]]:
        return [
            (topic, key, meta["conn"], meta["n"])
            for topic in self.topics
            for key, meta in tracker.list(topic)
        ]

    def differing(self, truth: set) -> list[Replica]:
        wrong = []
        for replica in self.live.values():
            view = self.view(replica.tracker)
            if len(view) != len(truth) or set(view) != truth:
                wrong.append(replica)
        return wrong

    def converged(self) -> bool:
        truth = self.truth()
        for replica in self.live.values():  # stops at the first difference: cheap while far
            view = self.view(replica.tracker)
            if len(view) != len(truth) or set(view) != truth:
                return False
        return True

    def membership_agreed(self) -> bool:
        ids = set(self.live)
        for replica in self.live.values():
            up = {p for p, s in replica.tracker.replicas().items() if s == "up"}
            if up != ids:
                return False
        return True

    async def poll(self, check, timeout: float, every: float = 0.1) -> float | None:  # noqa: ANN001, ASYNC109
        """Seconds until `check()` was true, or None if `timeout` ran out first. A check
        of 100 replicas' views takes tens of ms: it waits at least twice as long as the
        last check took, so that checking stays a small share of the loop."""
        started = self.loop.time()
        while True:
            before = time.perf_counter()
            if check():
                return self.loop.time() - started
            if self.loop.time() - started >= timeout:
                return None
            await asyncio.sleep(max(every, 2 * (time.perf_counter() - before)))

    def diagnose(self) -> str:
        truth = self.truth()
        lines = [f"truth: {len(truth)} rows over {len(self.live)} live replicas"]
        owner = {
            (topic, key, conn, n): r.id
            for r in self.live.values()
            for (topic, conn, key), n in r.rows.items()
        }
        wrong = self.differing(truth)
        lines.append(f"{len(wrong)} replicas differ from the truth")
        for replica in wrong[:5]:
            view = self.view(replica.tracker)
            missing = truth - set(view)
            extra = set(view) - truth
            dupes = len(view) - len(set(view))
            lines.append(
                f"  {replica.id} ({replica.label}): {len(missing)} missing, {len(extra)} extra, "
                f"{dupes} duplicated"
            )
            for row in sorted(missing)[:3]:
                peer = owner.get(row)
                peers = {}
                for s in replica.tracker.status()["shards"]:
                    peers.update(s["peers"])
                lines.append(f"    missing {row} owned by {peer}: {peers.get(peer)}")
            for row in sorted(extra)[:3]:
                lines.append(f"    extra {row}")
        return "\n".join(lines)

    # -- counters ------------------------------------------------------------------------

    def stats(self) -> Counter[str]:
        total = Counter(self.frozen_stats)
        for replica in self.live.values():
            total.update(stats_of(replica.tracker))
        return total

    def rows_total(self) -> int:
        return sum(len(r.rows) for r in self.live.values())


def bus_counters(bus: CountingBus) -> Counter[str]:
    counts = Counter({f"pub {k}": v for k, v in bus.published.items()})
    counts["deliveries"] = bus.messages
    counts["bytes"] = bus.bytes
    return counts


async def join_probe(sim: Simulation) -> dict[str, str]:
    """What one join costs a quiet cluster: the bus over one silent interval (every
    replica sends one empty heartbeat in it) without a join; then, from the start of a
    new replica that tracks --rows rows at once, over one broadcast period (the burst:
    every peer greets the newcomer with a heartbeat at once) and over a silent interval."""
    args, loop = sim.args, sim.loop
    window = args.period * args.silent_periods
    base = bus_counters(sim.bus)
    await asyncio.sleep(window)
    quiet = bus_counters(sim.bus) - base
    base = bus_counters(sim.bus)
    started = loop.time()
    snapshots: list[Counter[str]] = []

    async def snapshot_at(*seconds: float) -> None:
        for at in seconds:
            await asyncio.sleep(max(0.0, started + at - loop.time()))
            snapshots.append(bus_counters(sim.bus) - base)

    counting = asyncio.create_task(snapshot_at(args.period, window))
    newcomer = await sim.add_replica()
    while len(newcomer.rows) < args.rows:
        await sim.op(newcomer, track=True)
    took = await sim.poll(
        lambda: sim.converged() and sim.membership_agreed(), args.settle_timeout, every=0.02
    )
    if took is not None:
        took = loop.time() - started
    await counting
    burst, joined = snapshots

    def line(c: Counter[str]) -> str:
        return (
            f"{c['pub hb'] + c['pub hb0']} heartbeats, {c['pub tq']} transfer requests, "
            f"{c['pub tx']} transfers published; {c['deliveries']:,} deliveries, "
            f"{c['bytes']:,} B"
        )

    return {
        f"join probe: {window} s of quiet cluster": line(quiet),
        f"join probe: first {args.period} s from a join": line(burst),
        f"join probe: {window} s from a join": line(joined),
        "join probe: every replica shows the newcomer's rows and it theirs after, s": (
            f"{took:.2f}" if took is not None else "not within --settle-timeout"
        ),
    }


def stats_of(tracker: Tracker) -> Counter[str]:
    total: Counter[str] = Counter()
    for shard in tracker.status()["shards"]:
        total.update(shard["stats"])
    return total


def poisson(rng: random.Random, mean: float) -> int:
    if mean > 30:  # a late loop's burst: the normal approximation
        return max(0, round(rng.gauss(mean, mean**0.5)))
    count, threshold, product = 0, math.exp(-mean), rng.random()
    while product > threshold:
        count += 1
        product *= rng.random()
    return count


# -- reporting -------------------------------------------------------------------------------


@dataclass
class Window:
    phase: str
    t: float
    seconds: float
    live: int
    rows: int
    ops: int
    published: Counter
    published_bytes: Counter
    delivered: Counter
    delivered_bytes: Counter
    stats: Counter
    ticks: int
    late_ticks: int
    max_tick: float
    max_lag: float
    cpu: float


class Reporter:
    HEADER = (
        f"{'t s':>6} {'phase':<6} {'live':>4} {'rows':>5} {'ops':>5} | "
        f"{'hb':>4} {'hb0':>4} {'tq':>4} {'tx':>4} {'bye':>3} | "
        f"{'deliv':>6} {'kB':>7} | {'hb_st':>5} {'tx_st':>5} {'full':>4} | "
        f"{'late':>4} {'tick':>5} {'lag':>5} {'cpu':>4}"
    )

    def __init__(self, sim: Simulation, every: float, quiet: bool) -> None:
        self.sim = sim
        self.every = every
        self.quiet = quiet
        self.phase = "start"
        self.windows: list[Window] = []
        self.t0 = sim.loop.time()
        self._snapshot()

    def _snapshot(self) -> None:
        sim, bus = self.sim, self.sim.bus
        self.at = sim.loop.time()
        self.cpu_at = time.process_time()
        self.published = Counter(bus.published)
        self.published_bytes = Counter(bus.published_bytes)
        self.delivered = Counter(bus.delivered)
        self.delivered_bytes = Counter(bus.delivered_bytes)
        self.stats = sim.stats()
        self.ops = sum(sim.ops.values())

    def window(self) -> Window:
        sim, bus = self.sim, self.sim.bus
        now = sim.loop.time()
        seconds = now - self.at
        period = sim.args.period
        intervals, sim.tick_intervals = sim.tick_intervals, []
        sim.all_tick_intervals.extend(intervals)
        lag, sim.max_lag = sim.max_lag, 0.0
        w = Window(
            phase=self.phase,
            t=now - self.t0,
            seconds=seconds,
            live=len(sim.live),
            rows=sim.rows_total(),
            ops=sum(sim.ops.values()) - self.ops,
            published=Counter(bus.published) - self.published,
            published_bytes=Counter(bus.published_bytes) - self.published_bytes,
            delivered=Counter(bus.delivered) - self.delivered,
            delivered_bytes=Counter(bus.delivered_bytes) - self.delivered_bytes,
            stats=sim.stats() - self.stats,
            ticks=len(intervals),
            late_ticks=sum(1 for i in intervals if i > 1.5 * period),
            max_tick=max(intervals, default=0.0),
            max_lag=lag,
            cpu=(time.process_time() - self.cpu_at) / seconds if seconds else 0.0,
        )
        self._snapshot()
        return w

    def line(self, w: Window) -> str:
        p = w.published
        return (
            f"{w.t:6.1f} {w.phase:<6} {w.live:>4} {w.rows:>5} {w.ops:>5} | "
            f"{p['hb']:>4} {p['hb0']:>4} {p['tq']:>4} {p['tx']:>4} {p['bye']:>3} | "
            f"{sum(w.delivered.values()):>6} {sum(w.delivered_bytes.values()) / 1000:>7.1f} | "
            f"{w.stats['heartbeats_sent']:>5} {w.stats['transfers_sent']:>5} "
            f"{w.stats['full_transfers_sent']:>4} | "
            f"{w.late_ticks:>4} {w.max_tick * 1000:>5.0f} {w.max_lag * 1000:>5.0f} "
            f"{w.cpu * 100:>3.0f}%"
        )

    async def run(self) -> None:
        if not self.quiet:
            print(self.HEADER, flush=True)
        while True:
            await asyncio.sleep(self.every)
            self.flush()

    def flush(self) -> None:
        w = self.window()
        if w.seconds <= 0:
            return
        self.windows.append(w)
        if not self.quiet and w.seconds >= 0.1:  # not the sliver before a phase change
            print(self.line(w), flush=True)

    def set_phase(self, phase: str) -> None:
        self.flush()
        self.phase = phase


async def probe_lag(sim: Simulation, every: float = 0.02) -> None:
    loop = sim.loop
    while True:
        started = loop.time()
        await asyncio.sleep(every)
        sim.max_lag = max(sim.max_lag, loop.time() - started - every)


def phase_figures(windows: list[Window], period: float) -> dict[str, Any] | None:
    if not windows:
        return None
    seconds = sum(w.seconds for w in windows)
    periods = seconds / period
    pub: Counter = sum((w.published for w in windows), Counter())
    pub_b: Counter = sum((w.published_bytes for w in windows), Counter())
    dlv: Counter = sum((w.delivered for w in windows), Counter())
    dlv_b: Counter = sum((w.delivered_bytes for w in windows), Counter())
    st: Counter = sum((w.stats for w in windows), Counter())
    live = statistics.mean(w.live for w in windows)
    ticks = sum(w.ticks for w in windows)
    return {
        "seconds": seconds,
        "live": live,
        "rows": statistics.mean(w.rows for w in windows),
        "ops_per_s": sum(w.ops for w in windows) / seconds,
        "pub": {k: pub[k] / periods for k in KINDS},
        "pub_total": sum(pub.values()) / periods,
        "deliv": {k: dlv[k] / periods for k in KINDS},
        "deliv_total": sum(dlv.values()) / periods,
        "deliv_bytes": sum(dlv_b.values()) / periods,
        "pub_bytes": sum(pub_b.values()) / periods,
        "hb_size": pub_b["hb"] / pub["hb"] if pub["hb"] else 0.0,
        "hb0_size": pub_b["hb0"] / pub["hb0"] if pub["hb0"] else 0.0,
        "tx_size": pub_b["tx"] / pub["tx"] if pub["tx"] else 0.0,
        "stats": st,
        "late": sum(w.late_ticks for w in windows) / ticks if ticks else 0.0,
        "max_tick": max(w.max_tick for w in windows),
        "max_lag": max(w.max_lag for w in windows),
        "cpu": sum(w.cpu * w.seconds for w in windows) / seconds,
    }


def summary(sim: Simulation, reporter: Reporter, results: dict[str, Any]) -> str:
    args = sim.args
    period = args.period
    phases = [
        (p, phase_figures([w for w in reporter.windows if w.phase == p], period))
        for p in ("start", "churn", "settle", "join")
    ]
    phases = [(p, f) for p, f in phases if f]
    out = []
    out.append("")
    out.append(
        f"Summary: {args.replicas} replicas, loss {args.loss:.0%}, delay 0-"
        f"{args.delay_max * 1000:.0f} ms, seed {args.seed}; broadcast_period {period} s, "
        f"max_silent_periods {args.silent_periods}, down_period {args.down_period} s, "
        f"permdown_period {args.permdown_period} s, pool_size {args.pool_size}; "
        f"churn {args.seconds} s at {args.rate} ops/replica/s, a crash or graceful stop "
        f"+ a join every {args.membership_every} s"
    )
    out.append("")
    out.append("Per broadcast period (averages over the phase)")
    out.append("")
    head = ["figure"] + [p for p, _ in phases]
    rows: list[list[str]] = []

    def add(name: str, fn) -> None:  # noqa: ANN001
        rows.append([name] + [fn(f) for _, f in phases])

    add("phase length, s", lambda f: f"{f['seconds']:.1f}")
    add("live replicas (mean)", lambda f: f"{f['live']:.1f}")
    add("tracked rows, all replicas (mean)", lambda f: f"{f['rows']:.0f}")
    add("ops per second (track/update/untrack)", lambda f: f"{f['ops_per_s']:.1f}")
    add("heartbeats with a delta published", lambda f: f"{f['pub']['hb']:.1f}")
    add("empty heartbeats published", lambda f: f"{f['pub']['hb0']:.1f}")
    add("transfer requests published", lambda f: f"{f['pub']['tq']:.2f}")
    add("transfers published", lambda f: f"{f['pub']['tx']:.2f}")
    add("goodbyes published", lambda f: f"{f['pub']['bye']:.3f}")
    add("publishes, all kinds", lambda f: f"{f['pub_total']:.1f}")
    add("publishes per replica", lambda f: f"{f['pub_total'] / f['live']:.2f}")
    add("deliveries (bus messages)", lambda f: f"{f['deliv_total']:.0f}")
    add("  of which heartbeats", lambda f: f"{f['deliv']['hb'] + f['deliv']['hb0']:.0f}")
    add("  of which transfers + requests", lambda f: f"{f['deliv']['tx'] + f['deliv']['tq']:.1f}")
    add("bytes delivered (bus bytes)", lambda f: f"{f['deliv_bytes']:,.0f}")
    add("bytes published", lambda f: f"{f['pub_bytes']:,.0f}")
    add("mean heartbeat with delta, B", lambda f: f"{f['hb_size']:.0f}")
    add("mean empty heartbeat, B", lambda f: f"{f['hb0_size']:.0f}")
    add("mean transfer, B", lambda f: f"{f['tx_size']:.0f}")
    add(
        "stats: heartbeats_sent / transfers_sent",
        lambda f: f"{f['stats']['heartbeats_sent']} / {f['stats']['transfers_sent']}",
    )
    add(
        "stats: transfers_requested / full",
        lambda f: f"{f['stats']['transfers_requested']} / {f['stats']['full_transfers_sent']}",
    )
    add("ticks later than 1.5 periods", lambda f: f"{f['late']:.1%}")
    add("longest tick interval, ms", lambda f: f"{f['max_tick'] * 1000:.0f}")
    add("longest loop lag, ms", lambda f: f"{f['max_lag'] * 1000:.0f}")
    add("CPU of this process", lambda f: f"{f['cpu']:.0%}")
    out.extend(markdown_table(head, rows))
    out.append("")
    conv = results
    out.append("| result | value |")
    out.append("|---|---|")
    for name, value in conv.items():
        out.append(f"| {name} | {value} |")
    return "\n".join(out)


def markdown_table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def machine() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                "?",
            )
    except OSError:
        model = platform.processor() or "?"
    load = os.getloadavg()
    return (
        f"machine: {os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


# -- main ------------------------------------------------------------------------------------


async def simulate(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    sim = Simulation(args)
    status = await run(sim)
    return status, sim.report


async def run(sim: Simulation) -> int:
    args = sim.args
    downs = DownLog(sim)
    log = logging.getLogger("tracker")
    log.addHandler(downs)
    log.propagate = False  # 100 replicas x every crash would flood stderr
    print(machine(), flush=True)
    print(
        f"{args.replicas} replicas, {args.seconds} s of churn, loss {args.loss:.0%}, seed "
        f"{args.seed}, broadcast_period {args.period} s (a line per {args.report_every} s; "
        "columns: publishes by kind, deliveries and kB on the bus, trackers' heartbeats_sent /"
        " transfers_sent / full_transfers_sent, ticks later than 1.5 periods, longest tick "
        "interval ms, longest loop lag ms, CPU)",
        flush=True,
    )
    reporter = Reporter(sim, args.report_every, args.quiet)
    tasks = [asyncio.create_task(reporter.run()), asyncio.create_task(probe_lag(sim))]
    results: dict[str, Any] = {}
    status = 0
    try:
        started = sim.loop.time()
        await asyncio.gather(*(sim.add_replica() for _ in range(args.replicas)))
        for replica in list(sim.live.values()):
            while len(replica.rows) < args.rows:
                await sim.op(replica, track=True)
        took = await sim.poll(sim.converged, args.settle_timeout)
        if took is None:
            print("FAILED: the replicas did not converge after the start", flush=True)
            print(sim.diagnose(), flush=True)
            return 1
        results["start: all replicas converged after, s"] = f"{sim.loop.time() - started:.2f}"

        reporter.set_phase("churn")
        await sim.churn(args.seconds)
        reporter.set_phase("settle")
        stopped = sim.loop.time()
        took = await sim.poll(sim.converged, args.settle_timeout)
        if took is None:
            status = 1
            results["converged after churn stopped"] = (
                f"NO, not within {args.settle_timeout} s (seed {args.seed})"
            )
            print(f"\nFAILED: no convergence within {args.settle_timeout} s", flush=True)
            print(sim.diagnose(), flush=True)
        else:
            results["converged after churn stopped, s"] = f"{took:.2f}"
            for how, when in sorted(sim.last_leave.items()):
                results[f"  last {how} before churn stopped, s"] = f"{stopped - when:.2f}"
            agreed = await sim.poll(sim.membership_agreed, args.settle_timeout, every=0.05)
            if agreed is not None:
                agreed = sim.loop.time() - stopped
            results["membership agreed (live ones up, no others) after, s"] = (
                f"{agreed:.2f}" if agreed is not None else "no"
            )
            # Stays converged: nothing comes back, nothing goes.
            diverged = await sim.poll(lambda: not sim.converged(), args.hold, every=0.1)
            stable = diverged is None
            results[f"still exact {args.hold} s later"] = "yes" if stable else "NO"
            if not stable:
                status = 1
                print("\nFAILED: converged, then diverged again", flush=True)
                print(sim.diagnose(), flush=True)
            else:
                reporter.set_phase("join")
                results.update(await join_probe(sim))
        reporter.flush()
    finally:
        for task in tasks:
            task.cancel()
        for replica in list(sim.live.values()):
            await replica.tracker.stop(graceful=False)
        log.removeHandler(downs)
        log.propagate = True

    st = sim.stats()
    results["replicas that ran (started in all)"] = str(sim.made)
    results["membership events"] = ", ".join(f"{v} {k}" for k, v in sorted(sim.events.items()))
    results["ops"] = ", ".join(f"{v} {k}" for k, v in sorted(sim.ops.items()))
    results["rows at the end (truth)"] = str(sim.rows_total())
    results["down reports (peer x replica)"] = (
        f"{downs.downs}: of a running replica (false downs) {downs.false_downs}, of a "
        f"replica stopped gracefully (its goodbye lost) {downs.lost_goodbyes}"
    )
    if downs.other:
        results["other tracker warnings"] = ", ".join(
            f"{n} x {msg!r}" for msg, n in downs.other.most_common(3)
        )
    ticks = sorted(sim.all_tick_intervals)
    if ticks:
        results["tick interval p50 / p99 / max, ms"] = (
            f"{ticks[len(ticks) // 2] * 1000:.0f} / {ticks[int(len(ticks) * 0.99)] * 1000:.0f}"
            f" / {ticks[-1] * 1000:.0f} (period {args.period * 1000:.0f})"
        )
    results["totals: heartbeats_sent / transfers_sent / full / requested"] = (
        f"{st['heartbeats_sent']} / {st['transfers_sent']} / {st['full_transfers_sent']} / "
        f"{st['transfers_requested']}"
    )
    results["totals: bus messages / bytes"] = f"{sim.bus.messages} / {sim.bus.bytes:,}"
    late = sum(1 for i in ticks if i > 1.5 * args.period)
    kept_up = late <= 0.01 * len(ticks) and max(ticks, default=0) < args.down_period / 2
    results["event loop kept up"] = (
        ("yes" if kept_up else "NO")
        + f": {late} of {len(ticks)} replica ticks ({late / max(len(ticks), 1):.1%}) came later "
        f"than 1.5 x broadcast_period"
    )
    print(summary(sim, reporter, results), flush=True)
    print(machine(), flush=True)
    if args.json:
        figures = {
            phase: phase_figures([w for w in reporter.windows if w.phase == phase], args.period)
            for phase in ("start", "churn", "settle", "join")
        }
        sim.report = {"args": vars(args), "machine": machine(), "phases": figures}
        sim.report["results"] = results
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0, help="churn duration")
    parser.add_argument("--loss", type=float, default=0.05, help="per delivery")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--delay-max", type=float, default=0.05, help="seconds per delivery")
    parser.add_argument("--period", type=float, default=0.5, help="broadcast_period")
    parser.add_argument("--silent-periods", type=int, default=4, help="max_silent_periods")
    parser.add_argument("--down-period", type=float, default=10.0)
    parser.add_argument("--permdown-period", type=float, default=30.0)
    parser.add_argument("--clock-sample-periods", type=int, default=2)
    parser.add_argument("--pool-size", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.5, help="ops per replica per second")
    parser.add_argument("--rows", type=int, default=10, help="rows a replica tends to hold")
    parser.add_argument("--topics", type=int, default=20)
    parser.add_argument(
        "--membership-every",
        type=float,
        default=2.0,
        help="seconds between leaves (crash / graceful in turn), each followed by a join; 0: none",
    )
    parser.add_argument("--settle-timeout", type=float, default=30.0)
    parser.add_argument("--hold", type=float, default=2.0, help="seconds to stay converged")
    parser.add_argument("--report-every", type=float, default=1.0)
    parser.add_argument("--quiet", action="store_true", help="only the summary")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    status, report = asyncio.run(simulate(args))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=dict))
    return status


if __name__ == "__main__":
    sys.exit(main())
