"""When a shard's heartbeats go out under steady changes: every broadcast period, counted
from when each was due, so a timer that fires late does not stretch the next period."""

from __future__ import annotations

import asyncio

from tracker.conf import TrackerOptions
from tracker.shard import Shard

PERIOD = 0.05


def shard_on(clock: list[float], sent: list[float]) -> Shard:
    return Shard(
        0,
        "r1",
        TrackerOptions(broadcast_period=PERIOD, down_period=1.0, permdown_period=2.0),
        send=lambda index, to, payload: sent.append(clock[0]),
        emit=lambda joins, leaves: None,
        clock=lambda: clock[0],
    )


async def test_a_late_heartbeat_timer_does_not_delay_the_next_heartbeat():
    clock, sent = [0.0], []
    shard = shard_on(clock, sent)
    shard.flush()  # a heartbeat at 0.0
    shard.changed()  # a change right after it: its heartbeat is due at 0.05
    clock[0] = PERIOD + 0.004  # ...but the timer fires 4 ms late
    await asyncio.sleep(PERIOD * 2)
    assert sent == [0.0, PERIOD + 0.004]

    # The next change, one period after the second heartbeat was due, goes out at once:
    # the period is counted from 0.05, not from 0.054.
    clock[0] = 2 * PERIOD
    shard.changed()
    await asyncio.sleep(0)
    assert sent == [0.0, PERIOD + 0.004, 2 * PERIOD]


async def test_heartbeats_stay_a_period_apart_when_changes_come_fast():
    clock, sent = [0.0], []
    shard = shard_on(clock, sent)
    shard.flush()
    clock[0] = 0.01
    shard.changed()  # a change 10 ms after a heartbeat waits for the period
    await asyncio.sleep(0)
    assert sent == [0.0]
    shard.changed()  # more changes share the heartbeat already scheduled
    await asyncio.sleep(PERIOD * 2)
    assert len(sent) == 2
