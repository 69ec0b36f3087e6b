"""Shared by the tracker commands: join the cluster as a short-lived observer replica."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from django.core.management.base import CommandError, CommandParser

from tracker import Tracker, TransportUnavailable
from tracker.process import tracker_settings

T = TypeVar("T")


def observe(wait: float, read: Callable[[Tracker, bool], T], verbosity: int = 1) -> T:
    """Start an observer, wait up to `wait` s for a sync, return `read(tracker, synced)`."""
    if verbosity < 2:  # the replica's own comings and goings are noise here
        logging.getLogger("tracker").setLevel(logging.WARNING)
    name, options = tracker_settings()
    if not options.get("redis_url"):
        raise CommandError(
            "REDIS_URL is not set: the embedded tracker lives inside the single server "
            "process and cannot be observed from outside. Set REDIS_URL to run a cluster."
        )
    if wait <= 0:
        raise CommandError("--wait must be a positive number of seconds")

    async def run() -> T:
        tracker = Tracker(name, observer=True, **options)
        try:
            await tracker.start()
        except TransportUnavailable as error:
            raise CommandError(str(error)) from None
        try:
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
