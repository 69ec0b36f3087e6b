"""Race hunt: heal cycles over the tracker's public API, counting every lie a subscriber is told.

Replicas on an in-process LocalBus with loss, duplication and random delays (which reorder
messages) run a random workload of tracks, updates and untracks. Each cycle cuts one
replica off (a partition), runs the workload on both sides past the down period so that
each side takes the other for down, heals, and waits until every replica converges. Now
and then the whole process stalls for about a down period (a collector pause, a frozen
VM): then every timer and every delivery that fell due meanwhile runs in one loop
iteration, peers found down and their messages together. After
each diff a subscriber receives (the moment the invariant must hold), each replica is
checked:

- lost leaves: rows a subscriber still believes visible (replaying every diff it got,
  from empty) that `list()` no longer has;
- phantom joins: rows visible in `list()` that the subscriber was never told about;
- doubles: two visible rows of one owner, topic, conn and key at once.

Runs on virtual time by default (tests/virtual_time.py: the loop jumps to its next timer,
so thousands of cycles take minutes, and one seed is one schedule); `--real-time` runs the
same on asyncio's own loop and clock, much slower.

    .venv/bin/python bench/race_hunt.py --cycles 5000 [--replicas 4] [--loss 0.1] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.tracker.conftest import (  # noqa: E402
    FAST,
    Replay,
    Workload,
    expected_view,
    view,
    visible_refs,
)
from tests.virtual_time import VirtualTimeLoop  # noqa: E402
from tracker import LocalBus, Tracker  # noqa: E402


def doubles(tracker: Tracker, topics) -> int:
    count = 0
    for topic in topics:
        identities = [(r.replica, r.conn, r.key) for r in tracker.rows(topic)]
        count += len(identities) - len(set(identities))
    return count


class CheckingReplay(Replay):
    """Replays every diff it is given and, right then (after a dispatch), compares what it
    believes visible with the tracker's rows."""

    def __init__(self, tracker: Tracker, topics, found: Counter) -> None:
        super().__init__()
        self.tracker, self.topics, self.found = tracker, topics, found

    def __call__(self, diff) -> None:
        super().__call__(diff)
        actual = visible_refs(self.tracker, self.topics)
        found = self.found
        found["lost leaves"] += len(self.visible - actual)
        found["phantom joins"] += len(actual - self.visible)
        found["doubles"] += doubles(self.tracker, self.topics)
        found["replay problems"] += len(self.problems)
        found["checks"] += 1
        self.problems.clear()
        self.visible = actual  # count each lie once


def stall(loop: asyncio.AbstractEventLoop, seconds: float) -> None:
    """Block the loop for `seconds`: on virtual time the clock jumps, else it sleeps."""
    if isinstance(loop, VirtualTimeLoop):
        loop.jump(seconds)
    else:
        time.sleep(seconds)


async def hunt(args: argparse.Namespace) -> Counter:
    rng = random.Random(args.seed)
    bus = LocalBus(
        loss=args.loss, duplicate=args.duplicate, delay=(0.0, args.max_delay), seed=args.seed
    )
    trackers = [Tracker("hunt", bus=bus, **FAST) for _ in range(args.replicas)]
    for tracker in trackers:
        await tracker.start()
    work = Workload(trackers, seed=args.seed)
    found: Counter = Counter()
    for tracker in trackers:
        tracker.subscribe(CheckingReplay(tracker, work.topics, found))
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    for cycle in range(1, args.cycles + 1):
        cut = rng.randrange(len(trackers))
        bus.partition(
            [trackers[cut].replica_id], [t.replica_id for i, t in enumerate(trackers) if i != cut]
        )
        # Heal near the moment the sides take each other for down: the return of a peer and
        # its detection as down then fall close together (or into one loop iteration).
        until = loop.time() + FAST["down_period"] * rng.uniform(*args.hold)
        while loop.time() < until:
            await work.step()
            await asyncio.sleep(rng.uniform(0, 0.05))
            if rng.random() < args.stalls / 10:
                stall(loop, FAST["down_period"] * rng.uniform(0.8, 1.5))
        if rng.random() < args.stalls:
            stall(loop, FAST["down_period"] * rng.uniform(0.8, 1.5))
        bus.heal()
        for _ in range(rng.randrange(20)):
            await work.step()
            await asyncio.sleep(rng.uniform(0, 0.02))
            if rng.random() < args.stalls / 10:
                stall(loop, FAST["down_period"] * rng.uniform(0.8, 1.5))
        settle = loop.time() + 10 * FAST["down_period"]
        while any(
            view(t, topic) != expected_view(work.rows, topic)
            for t in trackers
            for topic in work.topics
        ):
            if loop.time() > settle:
                found["cycles not converged"] += 1
                break
            await asyncio.sleep(FAST["broadcast_period"])
        found["cycles"] += 1
        if cycle % max(1, args.cycles // 20) == 0:
            print(
                f"  {cycle:>6} cycles, {time.perf_counter() - started:7.1f} s: "
                + ", ".join(f"{k} {v}" for k, v in sorted(found.items())),
                flush=True,
            )
    for tracker in trackers:
        await tracker.stop(graceful=False)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=5000)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--loss", type=float, default=0.1)
    parser.add_argument("--duplicate", type=float, default=0.05)
    parser.add_argument("--max-delay", type=float, default=0.03)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--stalls", type=float, default=0.3, help="chance of a stall of the process per cycle"
    )
    parser.add_argument(
        "--hold",
        type=float,
        nargs=2,
        default=(0.8, 1.4),
        help="partition length, as a range of multiples of down_period",
    )
    parser.add_argument("--real-time", action="store_true")
    args = parser.parse_args()
    logging.getLogger("tracker").setLevel(logging.ERROR)  # downs and ups by the thousand
    print(
        f"race hunt: {args.cycles} heal cycles, {args.replicas} replicas, loss {args.loss}, "
        f"duplication {args.duplicate}, delay 0-{args.max_delay} s, partitions of "
        f"{args.hold[0]}-{args.hold[1]} down periods, stalls {args.stalls}, seed {args.seed}, "
        f"{'real' if args.real_time else 'virtual'} time; timings {FAST}"
    )
    started = time.perf_counter()
    if args.real_time:
        found = asyncio.run(hunt(args))
    else:
        loop = VirtualTimeLoop()
        try:
            found = loop.run_until_complete(hunt(args))
        finally:
            loop.close()
    print(f"done in {time.perf_counter() - started:.1f} s")
    for key in (
        "cycles",
        "checks",
        "lost leaves",
        "phantom joins",
        "doubles",
        "replay problems",
        "cycles not converged",
    ):
        print(f"  {key:<22} {found.get(key, 0)}")


if __name__ == "__main__":
    main()
