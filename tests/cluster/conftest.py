from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.faults import Cluster
from tests.daphne_server import Database
from tests.redis_server import RedisServer


@pytest.fixture
def fault_cluster(
    redis_server: RedisServer, tmp_path: Path, server_database: Database
) -> Iterator[Cluster]:
    """One database (SQLite, then PostgreSQL: every test that uses this runs on both) and
    one Redis for nodes the test starts with `fault_cluster.node(name)`; every node is
    stopped afterwards, and its log printed (shown if the test fails)."""
    cluster = Cluster(redis_server, tmp_path, server_database)
    try:
        yield cluster
    finally:
        cluster.close()
