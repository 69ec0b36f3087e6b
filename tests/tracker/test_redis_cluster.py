"""Replicas over a real redis-server (started per test on a free port, so that a test
may kill and restart it), in this process and in separate OS processes."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import FAST


async def test_stop_returns_when_cancelled_mid_publish(make_tracker, redis_server):
    # redis-py wraps each socket write in asyncio.wait_for, which on Python 3.11 drops a
    # cancellation landing in the same loop iteration as the write's completion; stop()
    # then waited for ever on the sender task. Stop a few loop iterations after a change
    # (the flush, the publish, the write), one offset per fresh tracker.
    quiet = {"max_silent_periods": 100, "down_period": 10.0, "permdown_period": 20.0}
    for offset in range(8):
        t = await make_tracker(redis_url=redis_server.url, **quiet)
        await asyncio.sleep(
            2 * FAST["broadcast_period"]
        )  # no heartbeat due: a change goes out at once
        await t.track("c", "room", "k", {})
        for _ in range(offset):
            await asyncio.sleep(0)
        try:
            await asyncio.wait_for(t.stop(graceful=False), 2)
        except TimeoutError:
            pytest.fail(f"stop() hung when cancelled {offset} loop iterations after a change")
        assert not t.running
