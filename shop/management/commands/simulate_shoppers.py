"""manage.py simulate_shoppers: real websocket shoppers against running nodes (shop.simulator)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from websockets.exceptions import InvalidHandshake

from shop.simulator import Config, Node, Simulation, Summary, Truth
from shop.simulator.staff import StaffLoginFailed, Verdict, verify_staff_views

PROGRESS_INTERVAL = 0.25
PASSWORD_VARIABLE = "SIMULATOR_STAFF_PASSWORD"


class Command(BaseCommand):
    help = (
        "Simulate shoppers with real HTTP and websocket clients: each gets a cart from the "
        "storefront, opens its tabs, adds and removes items, and shoppers come and go. "
        "Prints a live progress bar, then a summary of connections, actions, errors and "
        "action->reply latency. Only the given URLs are ever contacted."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--url", help="the node to simulate against, ws://HOST:PORT")
        parser.add_argument(
            "--nodes", help="comma-separated node URLs to spread shoppers over (round robin)"
        )
        parser.add_argument("--shoppers", type=int, default=10, help="shoppers online (10)")
        parser.add_argument("--tabs", type=int, default=1, help="sockets per shopper (1)")
        parser.add_argument("--duration", type=float, default=10.0, help="seconds to act (10)")
        parser.add_argument(
            "--churn",
            type=float,
            default=0.0,
            help="shopper departures per second across the population, each replaced by a "
            "new shopper (0)",
        )
        parser.add_argument(
            "--think",
            type=float,
            default=1.0,
            help="mean seconds between one shopper's actions (1; at least 0.1)",
        )
        parser.add_argument("--seed", type=int, help="seed of the random choices")
        parser.add_argument(
            "--hold",
            type=float,
            default=0.0,
            help="after --duration, keep the final shoppers connected, idle, this long (0)",
        )
        parser.add_argument(
            "--truth-file",
            type=Path,
            help="write the final truth (carts, sockets, expected staff stats) as JSON to this "
            "file when the hold begins",
        )
        parser.add_argument(
            "--connect-timeout", type=float, default=10.0, help="per page or handshake (10)"
        )
        parser.add_argument(
            "--concurrency", type=int, default=50, help="shoppers arriving at once at most (50)"
        )
        parser.add_argument(
            "--verify-staff",
            metavar="USERNAME",
            help=f"at the hold point, log in as this staff user (password in the environment "
            f"variable {PASSWORD_VARIABLE}) on every node and check that the dashboard's "
            "numbers come to equal the simulator's truth; exit with an error if not",
        )
        parser.add_argument(
            "--verify-within",
            type=float,
            default=10.0,
            help="seconds each staff view has to match (10)",
        )
        parser.add_argument("--json", action="store_true", help="print the summary as JSON")
        parser.add_argument("--quiet", action="store_true", help="no progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        config = self.config(options)
        staff = self.staff_login(options)
        verdicts: list[Verdict] = []
        summary = asyncio.run(self.simulate(config, options, staff, verdicts))
        if options["json"]:
            data = {**summary.to_json(), "staff_views": [verdict_json(v) for v in verdicts]}
            self.stdout.write(json.dumps(data, indent=2, sort_keys=True))
        else:
            self.stdout.write(render_summary(summary, config))
            for verdict in verdicts:
                self.stdout.write(render_verdict(verdict, summary.truth))
        if not all(verdict.matched for verdict in verdicts):
            raise CommandError("a staff view did not match the simulator's truth")

    def staff_login(self, options: dict[str, Any]) -> tuple[str, str] | None:
        username = options["verify_staff"]
        if username is None:
            return None
        password = os.environ.get(PASSWORD_VARIABLE)
        if not password:
            raise CommandError(f"--verify-staff needs the password in {PASSWORD_VARIABLE}")
        if not options["verify_within"] > 0:
            raise CommandError("--verify-within must be a positive number of seconds")
        return username, password

    def config(self, options: dict[str, Any]) -> Config:
        urls = [options["url"]] if options["url"] else []
        urls += [u for u in (options["nodes"] or "").split(",") if u.strip()]
        if not urls:
            raise CommandError("give --url ws://HOST:PORT, or --nodes url1,url2")
        try:
            nodes = tuple(dict.fromkeys(Node.parse(url) for url in urls))
            return Config(
                nodes=nodes,
                shoppers=options["shoppers"],
                tabs=options["tabs"],
                duration=options["duration"],
                churn=options["churn"],
                think=options["think"],
                hold=options["hold"],
                seed=options["seed"],
                connect_timeout=options["connect_timeout"],
                connect_concurrency=options["concurrency"],
            )
        except ValueError as error:
            raise CommandError(str(error)) from None

    async def simulate(
        self,
        config: Config,
        options: dict[str, Any],
        staff: tuple[str, str] | None,
        verdicts: list[Verdict],
    ) -> Summary:
        """Run the simulation; at the hold point write the truth file and check the staff
        views (their verdicts are added to `verdicts`)."""
        simulation = Simulation(config)
        truth_file: Path | None = options["truth_file"]

        async def on_hold(_: Simulation, truth: Truth) -> None:
            if truth_file is not None:
                write_json(truth_file, truth.to_json())
            if staff is not None:
                try:
                    found = await verify_staff_views(
                        config.nodes, *staff, truth.stats(), options["verify_within"]
                    )
                    verdicts.extend(found)
                except (StaffLoginFailed, OSError, InvalidHandshake, TimeoutError) as error:
                    raise CommandError(f"could not open a staff view: {error}") from None

        with interrupts(simulation), progress(simulation, quiet=options["quiet"]):
            return await simulation.run(on_hold)


@contextlib.contextmanager
def interrupts(simulation: Simulation) -> Iterator[None]:
    """Ctrl-C or SIGTERM ends the run early, still closing every socket and summing up."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, simulation.interrupt)
    try:
        yield
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


@contextlib.contextmanager
def progress(simulation: Simulation, quiet: bool) -> Iterator[None]:
    """A live progress bar on stderr: phase, time, shoppers, sockets, actions/s, errors."""
    if quiet:
        yield
        return
    config = simulation.config
    bar = Progress(
        TextColumn("{task.description:<9}"),
        BarColumn(bar_width=12),
        TimeElapsedColumn(),
        TextColumn("{task.fields[figures]}"),
        console=Console(stderr=True),
    )
    task = bar.add_task("starting", total=config.duration + config.hold, figures="")

    last = (0, 0.0)  # actions sent, elapsed at the previous refresh

    def refresh() -> None:
        nonlocal last
        live = simulation.live()
        rate = (live.actions_sent - last[0]) / max(live.elapsed - last[1], 1e-9)
        last = (live.actions_sent, live.elapsed)
        bar.update(
            task,
            description=live.phase,
            completed=min(live.elapsed, config.duration + config.hold),
            figures=(
                f"shoppers {live.online}/{config.shoppers}  sockets {live.sockets}  "
                f"actions/s {rate:.1f}  errors {live.errors}"
            ),
        )

    async def keep_refreshing() -> None:
        while True:
            refresh()
            await asyncio.sleep(PROGRESS_INTERVAL)

    with bar:
        updater = asyncio.create_task(keep_refreshing())
        try:
            yield
        finally:
            updater.cancel()
            refresh()


def write_json(path: Path, data: Any) -> None:
    """Write atomically, so that a reader never sees half a file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(partial, path)


def verdict_json(verdict: Verdict) -> dict[str, Any]:
    return {"node": str(verdict.node), "matched": verdict.matched, "seen": verdict.seen}


def render_verdict(verdict: Verdict, truth: Truth) -> str:
    if verdict.matched:
        return f"staff view on {verdict.node}: matches the simulator's truth"
    expected = json.dumps(truth.stats(), sort_keys=True)
    seen = json.dumps(verdict.seen, sort_keys=True)
    return (
        f"staff view on {verdict.node}: DIFFERS from the simulator's truth\n"
        f"  expected {expected}\n  staff saw {seen}"
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def render_summary(summary: Summary, config: Config) -> str:
    """The end-of-run table, as plain text."""
    table = Table(title=f"Simulated shoppers: {summary.duration:.1f} s", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    nodes = ", ".join(str(node) for node in config.nodes)
    table.add_row("nodes", nodes)
    table.add_row(
        "shoppers",
        f"{summary.shoppers_arrived} arrived, {summary.shoppers_departed} left (churn), "
        f"{summary.shoppers_dropped} dropped",
    )
    table.add_row(
        "connections",
        f"{summary.connections_opened} opened, {summary.connections_closed} closed, "
        f"{summary.connections_dropped} dropped by the server",
    )
    failures = ", ".join(
        f"{reason} x{n}" for reason, n in sorted(summary.connection_failures.items())
    )
    table.add_row(
        "connection failures", f"{summary.failures}" + (f" ({failures})" if failures else "")
    )
    table.add_row("actions sent", str(summary.actions_sent))
    table.add_row("replies ok", str(summary.replies_ok))
    errors = ", ".join(f"{code} x{n}" for code, n in sorted(summary.replies_error.items()))
    table.add_row("replies error", f"{summary.errors}" + (f" ({errors})" if errors else ""))
    table.add_row(
        "no reply",
        f"{summary.reply_timeouts} timed out, {summary.replies_lost} lost with their socket",
    )
    table.add_row("cart mismatches", str(summary.cart_mismatches))
    latency = summary.latency
    table.add_row(
        "latency",
        f"p50 {_ms(latency.p50)}  p90 {_ms(latency.p90)}  p99 {_ms(latency.p99)}  "
        f"max {_ms(latency.max)}  ({latency.count} replies)",
    )
    stats = summary.truth.stats()
    table.add_row(
        "held at the end",
        f"{stats['shoppers']} shoppers, {stats['pages']} sockets, "
        f"{sum(stats['items'].values())} items in carts",
    )
    text = io.StringIO()
    Console(file=text, width=110, color_system=None).print(table)
    return text.getvalue().rstrip()
