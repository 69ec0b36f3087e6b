"""The shopper simulator: its parts, then real runs against a real daphne, checked against
the staff dashboard's numbers (read over the network, as the dashboard page reads them)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from django.core.management import CommandError, call_command

from shop.models import Item, Product
from shop.simulator import Config, Latency, Node, Simulation, StaffView, Summary, Truth, run
from shop.simulator.shoppers import MIN_THINK, storefront
from shop.simulator.staff import verify_staff_views
from tests.daphne_server import ROOT, DaphneServer, manage
from tests.redis_server import free_port

STAFF_USER, STAFF_PASSWORD = "boss", "simulator-staff-pw"


def test_storefront_page_gives_the_items_on_sale_and_the_product_pages(client, db):
    call_command("seed_catalog", verbosity=0)
    items, pages = storefront(client.get("/").content.decode())
    on_sale = Item.objects.filter(product__released=True, stock__gt=0)
    assert items == sorted(on_sale.values_list("pk", flat=True))
    assert Item.objects.filter(product__released=True, stock=0).exists()  # left out
    released = Product.objects.filter(released=True)
    assert pages == ["/", *sorted(p.get_absolute_url() for p in released)]


def test_node_urls():
    node = Node.parse("ws://127.0.0.1:8001")
    assert (node.host, node.port, node.secure) == ("127.0.0.1", 8001, False)
    assert node.origin == "http://127.0.0.1:8001"
    assert node.ws_url("/ws/cart/?page=/") == "ws://127.0.0.1:8001/ws/cart/?page=/"
    assert Node.parse("http://localhost:9000/") == Node(False, "localhost", 9000)
    assert Node.parse("wss://shop.example").origin == "https://shop.example:443"
    for bad in ("127.0.0.1:8001", "ftp://x:1", "ws://x:1/ws/cart/", "ws://:80", "ws://x:99999"):
        with pytest.raises(ValueError):
            Node.parse(bad)


def test_truth_implies_the_staff_aggregates():
    truth = Truth(
        carts={"a": {7: 2, 9: 1}, "b": {7: 1}, "c": {}},
        pages={"a": ["/", "/products/x/"], "b": ["/"], "c": ["/products/x/"]},
    )
    assert truth.stats() == {
        "shoppers": 3,
        "pages": 4,
        "items": {"7": 3, "9": 1},
        "pages_by_path": {"/": 2, "/products/x/": 2},
    }
    assert truth.to_json()["carts"]["a"] == {"7": 2, "9": 1}


def test_latency_percentiles_are_nearest_rank_in_milliseconds():
    latency = Latency.of([i / 1000 for i in range(100, 0, -1)])  # 1..100 ms, unsorted
    assert (latency.count, latency.p50, latency.p90, latency.p99, latency.max) == pytest.approx(
        (100, 50, 90, 99, 100)
    )
    assert Latency.of([]) == Latency(0, None, None, None, None)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ([], "give --url"),
        (["--url", "127.0.0.1:8001"], "must start with ws://"),
        (["--url", "ws://127.0.0.1:8001", "--tabs", "0"], "tabs must be at least 1"),
        (["--url", "ws://127.0.0.1:8001", "--think", str(MIN_THINK / 2)], "rate-limits"),
        (["--url", "ws://127.0.0.1:8001", "--duration", "0"], "duration must be a positive"),
        (["--nodes", "ws://a:1,ws://b:2", "--verify-staff", "boss"], "SIMULATOR_STAFF_PASSWORD"),
    ],
)
def test_the_command_refuses_bad_input(arguments, message, monkeypatch):
    monkeypatch.delenv("SIMULATOR_STAFF_PASSWORD", raising=False)
    with pytest.raises(CommandError, match=message):
        call_command("simulate_shoppers", *arguments)


# Real runs


@pytest.fixture(scope="module")
def shop_server() -> Iterator[DaphneServer]:
    """One seeded daphne (the embedded single-node default) with a staff user."""
    server = DaphneServer().start()
    try:
        env = dict(server.env, DJANGO_SUPERUSER_PASSWORD=STAFF_PASSWORD)
        manage("createsuperuser", "--noinput", "--username", STAFF_USER, "--email", "b@x.test",
               env=env)  # fmt: skip
        yield server
    finally:
        server.stop()
        print(f"daphne log ({server.log_path}):\n{server.logs()}")  # shown when a test fails


def assert_consistent(summary: Summary, tabs: int) -> None:
    """The books of a run that lost nothing: every socket and every action accounted for."""
    assert summary.connection_failures == {}
    assert summary.connections_dropped == 0 and summary.shoppers_dropped == 0
    assert summary.connections_opened == summary.shoppers_arrived * tabs
    assert summary.connections_closed == summary.connections_opened
    assert summary.reply_timeouts == 0 and summary.replies_lost == 0
    assert summary.actions_sent == summary.replies_ok + summary.errors > 0
    # Removes name items in the cart; only adds of a scarce size can be refused.
    assert set(summary.replies_error) <= {"out_of_stock"}
    assert summary.cart_mismatches == 0
    latency = summary.latency
    assert latency.count == summary.actions_sent
    assert 0 < latency.p50 <= latency.p90 <= latency.p99 <= latency.max < 5000


@pytest.mark.cluster
async def test_a_churning_run_adds_up_and_the_staff_view_matches_its_truth(shop_server):
    config = Config(
        nodes=(Node.parse(shop_server.ws_url),),
        shoppers=20,
        tabs=2,
        duration=3,
        churn=5,
        think=0.3,
        seed=7,
    )
    seen: dict = {}

    async def compare(simulation: Simulation, truth: Truth) -> None:
        view = await StaffView.open(shop_server.ws_url, STAFF_USER, STAFF_PASSWORD)
        try:
            seen["matched"] = await view.wait_for(truth.stats(), within=10)
            seen["stats"] = view.stats
        finally:
            await view.close()

    started = time.monotonic()
    summary = await run(config, on_hold=compare)
    assert time.monotonic() - started < 3 + 15  # settling, the staff check and closing
    assert seen["matched"], mismatch(seen["stats"], summary)
    assert_consistent(summary, tabs=2)
    assert summary.shoppers_departed > 0  # churn 5/s for 3 s
    online = summary.shoppers_arrived - summary.shoppers_departed
    assert len(summary.truth.carts) == online >= 15
    assert all(len(pages) == 2 for pages in summary.truth.pages.values())
    assert sum(sum(q.values()) for q in summary.truth.carts.values()) > 0

    # Everything closed: the staff view drops back to nothing.
    view = await StaffView.open(shop_server.ws_url, STAFF_USER, STAFF_PASSWORD)
    empty = {"shoppers": 0, "pages": 0, "items": {}, "pages_by_path": {}}
    assert await view.wait_for(empty, within=10), view.current()
    await view.close()


def mismatch(stats: dict, summary: Summary) -> str:
    """What differs between a staff view's stats and a run's truth, for a failure message."""
    truth = summary.truth
    rows = stats.get("carts", {})
    return "\n".join(
        [
            f"staff: {json.dumps({k: stats.get(k) for k in truth.stats()}, sort_keys=True)}",
            f"truth: {json.dumps(truth.stats(), sort_keys=True)}",
            f"staff only: {[(c, rows[c]) for c in set(rows) - set(truth.carts)]}",
            f"truth only: {[(c, truth.pages[c]) for c in set(truth.carts) - set(rows)]}",
            f"summary: {summary}",
        ]
    )


def simulate(server: DaphneServer, *arguments: str, password: str = STAFF_PASSWORD):
    env = dict(server.env, SIMULATOR_STAFF_PASSWORD=password)
    return subprocess.run(
        [sys.executable, "manage.py", "simulate_shoppers", "--url", server.ws_url, *arguments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.cluster
def test_the_command_reports_json_writes_its_truth_and_checks_the_staff_view(shop_server, tmp_path):
    truth_file = tmp_path / "truth.json"
    result = simulate(
        shop_server,
        *("--shoppers", "8", "--tabs", "2", "--duration", "2", "--churn", "2", "--seed", "3"),
        *("--hold", "0.5", "--truth-file", str(truth_file), "--json"),
        *("--verify-staff", STAFF_USER),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["connection_failures"] == {} and report["connections_dropped"] == 0
    assert report["connections_opened"] == report["connections_closed"] > 0
    assert report["latency"]["count"] == report["actions_sent"] > 0
    assert report["staff_views"] == [
        {"node": shop_server.ws_url, "matched": True, "seen": report["truth"]["stats"]}
    ]
    assert report["truth"]["stats"]["shoppers"] == len(report["truth"]["carts"]) > 0
    assert json.loads(truth_file.read_text()) == report["truth"]


@pytest.mark.cluster
def test_the_command_prints_a_summary_table_and_fails_when_staff_login_does(shop_server):
    result = simulate(
        shop_server,
        *("--shoppers", "3", "--duration", "1", "--quiet", "--verify-staff", STAFF_USER),
        password="not-the-password",
    )
    assert result.returncode == 1
    assert "could not open a staff view" in result.stderr and "refused" in result.stderr

    result = simulate(shop_server, "--shoppers", "3", "--tabs", "2", "--duration", "1")
    assert result.returncode == 0, result.stderr
    assert "connections" in result.stdout and "6 opened, 6 closed" in result.stdout
    assert "latency" in result.stdout and "p99" in result.stdout
    assert result.stderr.startswith("done") and "shoppers 0/3" in result.stderr  # the bar


@pytest.mark.cluster
async def test_a_crashed_server_counts_as_dropped_and_the_run_still_ends_on_time():
    server = DaphneServer().start()
    try:
        simulation = Simulation(
            Config(
                nodes=(Node.parse(server.ws_url),),
                shoppers=5,
                tabs=2,
                duration=30,
                connect_timeout=2,
            )  # fmt: skip
        )
        await simulation.start()
        assert await simulation.populated(within=15)
        server.kill()
        started = time.monotonic()
        summary = await simulation.stop()
        assert time.monotonic() - started < 10
    finally:
        server.kill()
    assert summary.connections_opened == 10
    assert summary.connections_dropped + summary.connections_closed == 10
    assert summary.connections_dropped > 0
    assert summary.shoppers_dropped + len(summary.truth.carts) == 5


@pytest.mark.cluster
async def test_an_unreachable_node_gives_connection_failures_not_a_hang():
    port = free_port()  # nothing listens there
    started = time.monotonic()
    summary = await run(Config(nodes=(Node.parse(f"ws://127.0.0.1:{port}"),), shoppers=3,
                               duration=1.5, connect_timeout=1))  # fmt: skip
    assert time.monotonic() - started < 1.5 + 5
    assert summary.connections_opened == 0 and summary.actions_sent == 0
    assert summary.failures >= 3
    assert all(reason.startswith("GET /:") for reason in summary.connection_failures)
    assert summary.truth == Truth({}, {})


@pytest.mark.cluster
async def test_shoppers_spread_over_nodes_and_every_staff_view_agrees(tmp_path, redis_server):
    from tests.daphne_server import prepare_database

    database = prepare_database(tmp_path / "db.sqlite3")
    nodes = [
        DaphneServer(database, redis_url=redis_server.url, env={"TRACKER_NODE_NAME": f"n{i}"})
        for i in range(2)
    ]
    try:
        for node in nodes:
            node.start()
        manage("createsuperuser", "--noinput", "--username", STAFF_USER, "--email", "b@x.test",
               env=dict(nodes[0].env, DJANGO_SUPERUSER_PASSWORD=STAFF_PASSWORD))  # fmt: skip
        config = Config(
            nodes=tuple(Node.parse(node.ws_url) for node in nodes),
            shoppers=10,
            tabs=2,
            duration=2,
            churn=3,
            think=0.3,
            seed=11,
        )
        verdicts = []

        async def compare(simulation: Simulation, truth: Truth) -> None:
            assert {s.node for s in simulation.online.values()} == set(config.nodes)
            verdicts.extend(
                await verify_staff_views(
                    config.nodes, STAFF_USER, STAFF_PASSWORD, truth.stats(), within=10
                )
            )

        summary = await run(config, on_hold=compare)
    finally:
        for node in nodes:
            node.stop()
    assert_consistent(summary, tabs=2)
    assert [v.node for v in verdicts] == list(config.nodes)
    assert all(v.matched for v in verdicts), [(v.seen, summary.truth.stats()) for v in verdicts]
