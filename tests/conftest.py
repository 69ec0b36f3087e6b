import pytest

from tests.redis_server import RedisServer


@pytest.fixture
def redis_server():
    """A fresh redis-server for one test, which may kill and restart it."""
    server = RedisServer().start()
    yield server
    server.kill()
