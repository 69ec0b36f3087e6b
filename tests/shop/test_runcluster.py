"""manage.py runcluster: its refusals in-process, then the real thing in a subprocess (its own
redis-server and daphne nodes), stopped as an operator would with Ctrl-C (SIGINT)."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from shop.management.commands.runcluster import port_in_use
from shop.simulator import Config, Node, Simulation
from shop.simulator.staff import verify_staff_views
from tests.daphne_server import ROOT, manage, prepare_database, server_env
from tests.redis_server import free_port

STAFF_USER, STAFF_PASSWORD = "boss", "runcluster-staff-pw"


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports: ports runcluster can bind, as it checks
    them (not merely ports nobody listens on: the local end of a connection, which other
    processes on a busy machine hold by the thousand, cannot be bound either)."""
    for _ in range(50):
        first = free_port()
        if first + count <= 65535 and not any(port_in_use(first + i) for i in range(count)):
            return first
    raise RuntimeError("no run of free ports found")


# Refusals: checked before anything is started or migrated.


def test_fewer_than_one_node_is_refused():
    with pytest.raises(CommandError, match="--nodes must be at least 1"):
        call_command("runcluster", "--nodes", "0")


def listening_after_a_free_port() -> socket.socket:
    """A socket listening on a port whose predecessor is free."""
    for _ in range(50):
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        if not port_in_use(taken.getsockname()[1] - 1):
            taken.listen()
            return taken
        taken.close()
    raise RuntimeError("no free port below a free port found")


def test_a_port_in_use_is_refused_naming_the_port_and_node():
    with listening_after_a_free_port() as taken:
        port = taken.getsockname()[1]
        with pytest.raises(CommandError, match=f"port {port} \\(node-1\\) is in use"):
            call_command("runcluster", "--nodes", "2", "--port", str(port - 1))


def test_a_missing_redis_server_is_refused(settings, monkeypatch, tmp_path):
    settings.REDIS_URL = None
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server on it
    with pytest.raises(CommandError, match="redis-server is not installed"):
        call_command("runcluster", "--nodes", "1", "--port", str(free_ports(1)))


def test_an_unreachable_redis_url_is_refused():
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with pytest.raises(CommandError, match="cannot reach Redis"):
        call_command("runcluster", "--port", str(free_ports(2)), "--redis-url", url)


# The real thing


class RunCluster:
    """`manage.py runcluster` in a subprocess, its output collected line by line."""

    def __init__(self, var_dir: Path, nodes: int) -> None:
        self.port = free_ports(nodes)
        self.nodes = nodes
        database = prepare_database(var_dir / "db.sqlite3")
        self.env = server_env(var_dir, database)
        self.lines: list[str] = []
        self.fresh: queue.Queue[str] = queue.Queue()
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "runcluster", "--nodes", str(nodes),
             "--port", str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        threading.Thread(target=self._collect, daemon=True).start()
        self.redis_url = self.expect(r"Redis: (\S+)")[1]
        self.pids = {
            f"node-{i}": int(self.expect(rf"node-{i}: http://127\.0\.0\.1:\d+/  \(pid (\d+)\)")[1])
            for i in range(nodes)
        }
        self.pids["redis"] = int(self.expect(r"redis-server pid (\d+)", seen=True)[1])
        for i in range(nodes):
            self.expect(rf"node-{i} is up on ", seen=True)

    def _collect(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            self.fresh.put(line)

    def expect(self, pattern: str, within: float = 30, seen: bool = False) -> re.Match:
        """The first line matching `pattern` (among those already seen too, if `seen`)."""
        if seen:
            for line in self.lines:
                if match := re.search(pattern, line):
                    return match
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.fresh.get(timeout=left)
            except queue.Empty:
                break
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(self.lines))

    @property
    def node_urls(self) -> list[str]:
        return [f"ws://127.0.0.1:{self.port + i}" for i in range(self.nodes)]

    @property
    def redis_port(self) -> int:
        return int(re.search(r":(\d+)/", self.redis_url)[1])

    def interrupt(self, within: float = 30) -> int:
        """Ctrl-C, as a terminal sends it; the exit code."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(within)

    def output(self) -> str:
        return "\n".join(self.lines)

    def kill_leftovers(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid in getattr(self, "pids", {}).values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def start_cluster(tmp_path) -> Iterator:
    clusters: list[RunCluster] = []

    def start(nodes: int) -> RunCluster:
        cluster = RunCluster(tmp_path, nodes)
        clusters.append(cluster)
        return cluster

    yield start
    for cluster in clusters:
        cluster.kill_leftovers()
        print(cluster.output())  # shown when a test fails


def tracker_view(cluster: RunCluster) -> dict:
    env = dict(cluster.env, REDIS_URL=cluster.redis_url)
    return json.loads(manage("tracker_list", "carts", "--json", env=env).stdout)


@pytest.mark.cluster
async def test_nodes_form_one_cluster_and_ctrl_c_stops_everything(start_cluster):
    cluster = start_cluster(2)
    manage("createsuperuser", "--noinput", "--username", STAFF_USER, "--email", "b@x.test",
           env=dict(cluster.env, DJANGO_SUPERUSER_PASSWORD=STAFF_PASSWORD))  # fmt: skip
    nodes = tuple(Node.parse(url) for url in cluster.node_urls)
    simulation = Simulation(Config(nodes=nodes, shoppers=4, tabs=2, duration=60, seed=5))
    await simulation.start()
    try:
        assert await simulation.populated(within=15)
        truth = await simulation.settle()

        # One cluster: an observer on the printed Redis sees both replicas and every cart...
        view = tracker_view(cluster)
        assert sorted(name.split(":")[0] for name in view["replicas"]) == ["node-0", "node-1"]
        assert set(view["replicas"].values()) == {"up"}
        carts = view["topics"]["carts"]
        assert set(carts) == set(truth.carts)
        refs = [meta["ref"] for entry in carts.values() for meta in entry["metas"]]
        assert len(refs) == 8 and {ref.split(":")[0] for ref in refs} == {"node-0", "node-1"}
        # ...and each node's staff view shows the shoppers of both.
        verdicts = await verify_staff_views(
            nodes, STAFF_USER, STAFF_PASSWORD, truth.stats(), within=10
        )
        assert all(v.matched for v in verdicts), [v.seen for v in verdicts]

        # Ctrl-C with shoppers still connected: every node says goodbye, then Redis stops.
        assert cluster.interrupt() == 0, cluster.output()
    finally:
        summary = await simulation.stop()
    output = cluster.output()
    for name in ("node-0", "node-1"):
        assert re.search(rf"\[{name}\] .*tracker site says goodbye", output), output
        assert f"{name} stopped (exit code 0)" in output
    assert "redis stopped (exit code 0)" in output
    assert output.index("node-0 stopped") < output.index("redis stopped")
    assert "did not stop in time" not in output
    assert not any(alive(pid) for pid in cluster.pids.values())
    ports = [cluster.port, cluster.port + 1, cluster.redis_port]
    assert not any(listening(port) for port in ports)
    assert summary.connections_dropped + summary.connections_closed == 8


@pytest.mark.cluster
def test_a_dead_node_is_reported_and_the_others_keep_running(start_cluster):
    cluster = start_cluster(2)
    os.kill(cluster.pids["node-1"], signal.SIGKILL)
    cluster.expect(rf"node-1 \(pid {cluster.pids['node-1']}\) exited with code -9 \(signal 9\)")
    cluster.expect("the other nodes keep running")
    assert listening(cluster.port) and cluster.process.poll() is None

    assert cluster.interrupt() == 0
    assert "node-0 stopped (exit code 0)" in cluster.output()
    assert not any(alive(pid) for pid in cluster.pids.values())


@pytest.mark.cluster
def test_when_every_node_dies_the_cluster_stops_with_an_error(start_cluster):
    cluster = start_cluster(1)
    os.kill(cluster.pids["node-0"], signal.SIGKILL)
    assert cluster.process.wait(30) == 1
    output = cluster.output()
    assert "no node is left; stopping" in output and "every node exited" in output
    assert not alive(cluster.pids["redis"]) and not listening(cluster.redis_port)
