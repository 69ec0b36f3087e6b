"""What the cluster fault tests share: nodes with fast tracker timings, the truth of what the
test's live clients hold, bounded waits, and clients that reconnect as the pages do.

Timings of every node here (environment variables of shop/settings.py):
- broadcast period 0.05 s (heartbeats; an idle node sends one every 5 periods, 0.25 s),
- down period 1.0 s (a silent peer is down and its rows hidden),
- permdown period 120 s: far longer than any test, so a down peer is never purged during one
  and everything seen after a fault comes from down/up detection, goodbyes and transfers,
- staff diffs coalesced over 0.05 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path

from tests.daphne_server import (
    DaphneServer,
    Database,
    create_staff_user,
    server_env,
)
from tests.live_clients import Node, StaffClient, Tab, Visitor, seen, truth_of
from tests.redis_server import RedisServer

BROADCAST_PERIOD = 0.05
MAX_SILENT_PERIODS = 5  # the tracker's default (not set here)
SILENT_INTERVAL = BROADCAST_PERIOD * MAX_SILENT_PERIODS
DOWN_PERIOD = 1.0
PERMDOWN_PERIOD = 120.0
DIFF_INTERVAL = 0.05
# Added to every time bound: the test process, two daphne processes and Redis share 2 cores,
# so a node's tick or the test's read of a message may come this much late. The tracker's
# own delays are spelled out in each bound; this covers only scheduling.
SCHEDULING_TOLERANCE = 0.5

FAST_TIMINGS = {
    "TRACKER_BROADCAST_PERIOD": str(BROADCAST_PERIOD),
    "TRACKER_DOWN_PERIOD": str(DOWN_PERIOD),
    "TRACKER_PERMDOWN_PERIOD": str(PERMDOWN_PERIOD),
    "DASHBOARD_DIFF_INTERVAL": str(DIFF_INTERVAL),
}

STAFF_USER, STAFF_PASSWORD = "fault-staff", "fault-staff-pw"
# Waits that are not the measured bound: long enough never to fail a healthy run, short
# enough that a broken one fails in seconds rather than hanging.
SETTLE_SECONDS = 10.0


class Cluster:
    """Daphne nodes sharing one database (prepared: see `prepare_database`) and one Redis;
    `close()` stops them all and prints their logs (pytest shows them when the test fails)."""

    def __init__(self, redis: RedisServer, tmp_path: Path, database: Database) -> None:
        self.redis = redis
        self.tmp_path = tmp_path
        self.database = database
        create_staff_user(server_env(tmp_path, self.database), STAFF_USER, STAFF_PASSWORD)
        self.nodes: list[DaphneServer] = []

    def node(self, name: str, env: dict[str, str] | None = None) -> DaphneServer:
        """A started node named `name` (its tracker node name too), with the fast timings
        (`env` may override them)."""
        node = DaphneServer(
            self.database,
            redis_url=self.redis.url,
            env={"TRACKER_NODE_NAME": name, **FAST_TIMINGS, **(env or {})},
            var_dir=self.tmp_path / name,
        )
        self.nodes.append(node)
        return node.start()

    def close(self) -> None:
        for node in self.nodes:
            stopping = time.monotonic()
            try:
                node.stop()
            finally:
                print(
                    f"--- node {node.port} stopped in {time.monotonic() - stopping:.1f} s; "
                    f"its log ({node.log_path}):\n{node.logs(150)}"
                )


# -- the truth ---------------------------------------------------------------------------


async def until_exact(view: StaffClient, tabs: Iterable[Tab], within: float, what: str) -> float:
    """Wait (at most `within` s) until the view shows exactly the truth of `tabs`; returns
    the perf_counter time at which the message that made it so arrived."""
    expected = truth_of(tabs)
    await view.until(lambda v: seen(v) == expected, within, what)
    return view.diffs[-1].arrived if view.diffs else time.perf_counter()


async def stays_exact(views: Iterable[StaffClient], tabs: Iterable[Tab], seconds: float) -> None:
    """For `seconds`, no view may change: no late leave, no ghost coming back, no duplicate."""
    views = list(views)
    expected = truth_of(tabs)
    before = [len(view.diffs) for view in views]
    await asyncio.gather(*(view.drain(seconds) for view in views))
    for view, count in zip(views, before, strict=True):
        assert view.open, f"the staff view on {view.node} was closed ({view.ws.close_code})"
        late = [diff.stats for diff in view.diffs[count:]]
        assert not late, f"the staff view on {view.node} changed after converging: {late}"
        assert seen(view) == expected, f"{view.node}: {seen(view)} != {expected}"


def replica_names(view: StaffClient) -> dict[str, str]:
    """The view's replicas by node name (the replica id without its random part)."""
    return {replica.rsplit(":", 1)[0]: status for replica, status in view.replicas.items()}


# -- clients that come back, as the pages' scripts do ---------------------------------------


async def open_staff(node: Node, staff: Visitor | None = None) -> tuple[Visitor, StaffClient]:
    """A logged-in staff user and a staff view on `node`."""
    if staff is None:
        staff = Visitor(node.url)
        await asyncio.to_thread(staff.login, STAFF_USER, STAFF_PASSWORD)
    return staff, await staff.open_dashboard(node)


async def new_shopper(node: Node) -> Visitor:
    """A visitor whose first storefront page made its cart."""
    shopper = Visitor(node.url)
    await asyncio.to_thread(shopper.get, "/")
    return shopper


async def retrying(open_once, within: float, attempt: float = 3.0):
    """`await open_once(attempt)` until it succeeds, for at most `within` s, pausing 0.2 s
    between attempts as the pages' scripts back off: what a browser does while a node
    recovers. Raises the last failure when time runs out."""
    deadline = time.monotonic() + within
    while True:
        left = deadline - time.monotonic()
        try:
            return await open_once(max(0.5, min(attempt, left)))
        except Exception as error:  # refused, HTTP 500, timed out, closed at once
            if deadline - time.monotonic() <= 0.2:
                raise AssertionError(f"could not reconnect within {within} s: {error!r}") from None
        await asyncio.sleep(0.2)
