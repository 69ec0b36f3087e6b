"""For management commands (the tracker's and any app's): join the cluster as a short-lived
observer replica, which peers greet with their rows and never list, and read it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from django.core.management.base import CommandError, CommandParser

from tracker import Tracker, TransportUnavailable
from tracker.process import tracker_settings

T = TypeVar("T")


def observe(
    wait: float,
    read: Callable[[Tracker, bool], T],
    verbosity: int = 1,
    *,
    listen: float = 0.0,
    embedded: str = "it cannot be observed from outside. Set REDIS_URL to run a cluster.",
    failed: str = "",
) -> T:
    """Start an observer, listen `listen` s, wait up to `wait` s more for a sync, and
    return `read(tracker, synced)`. CommandError, naming `embedded` (what the embedded
    default means for the caller) when there is no REDIS_URL, and with `failed` appended
    when Redis cannot be reached."""
    if verbosity < 2:  # the replica's own comings and goings are noise here
        logging.getLogger("tracker").setLevel(logging.WARNING)
    name, options = tracker_settings()
    if not options.get("redis_url"):
        raise CommandError(
            f"REDIS_URL is not set: the embedded tracker lives inside the single server "
            f"process, and {embedded}"
        )
    if wait <= 0:
        raise CommandError("--wait must be a positive number of seconds")

    async def run() -> T:
        tracker = Tracker(name, observer=True, **options)
        try:
            await tracker.start()
        except TransportUnavailable as error:
            raise CommandError(f"{error}{failed}") from None
        try:
            if listen:
                await asyncio.sleep(listen)
            synced = await tracker.sync(within=wait)
            return read(tracker, synced)
        finally:
            await tracker.stop(graceful=True)

    return asyncio.run(run())


def add_wait_argument(parser: CommandParser) -> None:
    parser.add_argument(
        "--wait",
        type=float,
        default=3.0,
        help="seconds to wait for the cluster's state to arrive (default 3)",
    )
