"""manage.py tracker_list [topic] [--json]: who is present, as the cluster sees it."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from tracker import Tracker
from tracker.observe import add_wait_argument, observe


class Command(BaseCommand):
    help = (
        "Join the tracker cluster as a short-lived observer, wait for a sync, and print "
        "the presences grouped by key (every topic, or one)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("topic", nargs="?", help="only this topic")
        parser.add_argument("--json", action="store_true", help="print JSON")
        add_wait_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        topic = options["topic"]

        def read(tracker: Tracker, synced: bool) -> dict[str, Any]:
            topics = [topic] if topic else sorted(tracker.topics())
            return {
                "synced": synced,
                "replicas": tracker.replicas(),
                "topics": {t: tracker.presence(t) for t in topics},
            }

        view = observe(options["wait"], read, options["verbosity"])
        if options["json"]:
            self.stdout.write(json.dumps(view, indent=2, sort_keys=True, default=str))
            return
        up = sum(1 for s in view["replicas"].values() if s == "up")
        down = sum(1 for s in view["replicas"].values() if s == "down")
        self.stdout.write(
            f"{up} replica(s) up, {down} down"
            + ("" if view["synced"] else " (not fully synced: some peers did not answer)")
        )
        if not any(view["topics"].values()):
            self.stdout.write(f"no presences{f' on {topic}' if topic else ''}")
        for name, keys in view["topics"].items():
            pages = sum(len(entry["metas"]) for entry in keys.values())
            self.stdout.write(
                self.style.MIGRATE_HEADING(f"{name}: {len(keys)} key(s), {pages} presence(s)")
            )
            for key in sorted(keys):
                metas = keys[key]["metas"]
                self.stdout.write(f"  {key}  ({len(metas)})")
                for meta in metas:
                    fields = ", ".join(f"{k}={v}" for k, v in meta.items() if k != "ref")
                    self.stdout.write(f"    {meta['ref']}  {fields}")
