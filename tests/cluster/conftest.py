from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.faults import Cluster
from tests.redis_server import RedisServer


@pytest.fixture
def fault_cluster(redis_server: RedisServer, tmp_path: Path) -> Iterator[Cluster]:
    """One database and one Redis for nodes the test starts with `fault_cluster.node(name)`;
    every node is stopped afterwards, and its log printed (shown if the test fails)."""
    cluster = Cluster(redis_server, tmp_path)
    try:
        yield cluster
    finally:
        cluster.close()
