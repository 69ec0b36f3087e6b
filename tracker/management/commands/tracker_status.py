"""manage.py tracker_status [--json]: the replicas of the cluster and their health."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from tracker import Tracker
from tracker.observe import add_wait_argument, observe


class Command(BaseCommand):
    help = (
        "Join the tracker cluster as a short-lived observer and print every replica: "
        "up/down, its clock, the rows it holds, and the age of its last heartbeat; and "
        "any peer refused for speaking another protocol version or having another shard count."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print JSON")
        add_wait_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        def read(tracker: Tracker, synced: bool) -> dict[str, Any]:
            status = tracker.status()
            return {
                "synced": synced,
                "observer": status["replica"],
                "transport": status["transport"],
                "shards": [
                    {"index": shard["index"], "replicas": shard["peers"]}
                    for shard in status["shards"]
                ],
                "incompatible": status["incompatible"],
                "rejected": status["rejected"],
            }

        view = observe(options["wait"], read, options["verbosity"])
        if options["json"]:
            self.stdout.write(json.dumps(view, indent=2, sort_keys=True))
            return
        self.stdout.write(f"cluster on {view['transport']}, seen by observer {view['observer']}")
        if not view["synced"]:
            self.stdout.write(self.style.WARNING("not fully synced: some peers did not answer"))
        for peer, what in sorted(view["incompatible"].items()):
            self.stdout.write(self.style.ERROR(f"refused peer {peer}: it {what}"))
        if view["rejected"]:
            counts = ", ".join(f"{n} {reason}" for reason, n in sorted(view["rejected"].items()))
            self.stdout.write(self.style.WARNING(f"frames rejected while listening: {counts}"))
        for shard in view["shards"]:
            replicas = shard["replicas"]
            self.stdout.write(
                self.style.MIGRATE_HEADING(f"shard {shard['index']}: {len(replicas)} replica(s)")
            )
            if not replicas:
                self.stdout.write("  no replicas heard")
                continue
            self.stdout.write(
                f"  {'replica':<40} {'status':<6} {'clock':>8} {'rows':>8} {'heartbeat age':>14}"
            )
            for replica in sorted(replicas):
                info = replicas[replica]
                age = info["last_heartbeat_age"]
                status = info["status"]
                styled = (self.style.SUCCESS if status == "up" else self.style.ERROR)(
                    f"{status:<6}"
                )
                self.stdout.write(
                    f"  {replica:<40} {styled} {info['clock']:>8} {info['rows']:>8} "
                    f"{'-' if age is None else f'{age:.2f} s':>14}"
                )
