"""manage.py purge_carts --older-than DAYS: delete abandoned anonymous carts.

A cart is abandoned when it belongs to no user, nobody changed it for DAYS days (a page view
that shows it marks it as seen, at most once a day: shop.identity) and no page has it open
right now. Which carts are open is known only to the tracker replicas of the running
servers, so the command joins the cluster (REDIS_URL) as a short-lived observer replica,
waits until it has heard every node, and spares every cart that any node shows online. It
purges nothing when it cannot be sure: a node that did not answer, a replica that is down
(its shoppers hidden). Without REDIS_URL the tracker lives inside the one server process
and cannot be asked: pass --offline when no server is running.

Deletes in batches, each re-checking its conditions, so a cart changed meanwhile stays.
Schedule it with `clearsessions` (docs/deployment.md).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from shop.models import Cart
from shop.presence import CARTS_TOPIC
from tracker import Tracker, TrackerOptions
from tracker.observe import observe
from tracker.process import tracker_settings

BATCH = 500


def online_cart_ids(wait: float, verbosity: int = 1) -> set[str]:
    """The ids of every cart that some node of the cluster shows online."""

    def read(tracker: Tracker, synced: bool) -> set[str]:
        if not synced:
            raise CommandError(
                f"not every node sent its shoppers within {wait:g} s; nothing was purged"
            )
        down = sorted(r for r, status in tracker.replicas().items() if status != "up")
        if down:
            raise CommandError(
                f"replicas {', '.join(down)} are down and their shoppers hidden; nothing was purged"
            )
        return {key for key, _ in tracker.list(CARTS_TOPIC)}

    # Every live node answers the observer's greeting at once; listening for two of an idle
    # node's heartbeat gaps also hears one that was too busy to answer at first.
    timings = TrackerOptions.from_mapping(tracker_settings()[1])
    return observe(
        wait,
        read,
        verbosity,
        listen=2 * timings.silent_heartbeat_interval,
        embedded="it cannot tell which carts are open. Run this with the servers' "
        "REDIS_URL, or with --offline while no server is running.",
        failed="; nothing was purged",
    )


class Command(BaseCommand):
    help = (
        "Delete anonymous carts that nobody changed or viewed for --older-than days and "
        "that no page has open (asks the running servers' trackers: needs REDIS_URL)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--older-than", type=int, required=True, metavar="DAYS", help="days unchanged"
        )
        parser.add_argument(
            "--offline",
            action="store_true",
            help="no server is running: no cart is open, skip asking the trackers",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="only count what would be deleted"
        )
        parser.add_argument(
            "--wait",
            type=float,
            default=5.0,
            help="seconds to wait for every node's shoppers (default 5)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["older_than"]
        if days < 1:
            raise CommandError("--older-than must be at least 1 day")
        abandoned = Cart.objects.filter(
            user__isnull=True, updated_at__lt=timezone.now() - timedelta(days=days)
        )
        candidates = {str(pk) for pk in abandoned.values_list("pk", flat=True)}
        online = (
            set() if options["offline"] else online_cart_ids(options["wait"], options["verbosity"])
        )
        doomed = sorted(candidates - online)
        kept = len(candidates) - len(doomed)
        if options["dry_run"]:
            self.stdout.write(
                f"would purge {len(doomed)} abandoned cart(s) older than {days} day(s); "
                f"{kept} of that age are online"
            )
            return
        purged = 0
        for start in range(0, len(doomed), BATCH):
            # The same conditions again: a cart changed or claimed since stays.
            _, deleted = abandoned.filter(pk__in=doomed[start : start + BATCH]).delete()
            purged += deleted.get(Cart._meta.label, 0)
        self.stdout.write(
            f"purged {purged} abandoned cart(s) older than {days} day(s); "
            f"kept {kept} of that age that are online"
        )
