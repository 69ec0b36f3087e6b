"""A server process starts its tracker replica when it starts, not at its first request:
right after start-up, an operator's `tracker_status` lists every node, idle ones included,
and a staff dashboard's cluster panel shows them (issue 9)."""

from __future__ import annotations

import json
import time

import pytest

from tests.cluster.faults import Cluster
from tests.daphne_server import manage, server_env

pytestmark = pytest.mark.cluster


def listed_nodes(fault_cluster: Cluster) -> set[str]:
    env = server_env(fault_cluster.tmp_path, fault_cluster.database, fault_cluster.redis.url)
    status = json.loads(manage("tracker_status", "--json", "--wait", "1", env=env).stdout)
    return {
        replica.rsplit(":", 1)[0]
        for shard in status["shards"]
        for replica, info in shard["replicas"].items()
        if info["status"] == "up"
    }


def test_idle_nodes_are_replicas_from_the_start(fault_cluster: Cluster) -> None:
    # DaphneServer.start() waits for the login page only: nothing touches the tracker.
    fault_cluster.node("idle-a")
    fault_cluster.node("idle-b")
    deadline = time.monotonic() + 10
    while (nodes := listed_nodes(fault_cluster)) != {"idle-a", "idle-b"}:
        assert time.monotonic() < deadline, f"replicas listed: {nodes}"
