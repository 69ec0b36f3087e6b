"""Fixtures for the whole suite: a real redis-server per test, and the databases.

Tests that run on SQLite and on PostgreSQL (ids `[sqlite]` and `[postgres]`):

- in-process tests (pytest-django's `db`/`transactional_db`): the module says
  `pytestmark = pytest.mark.usefixtures("django_database")`;
- tests of daphne servers: they take their database from `server_database`.

Both go through the module-scoped, parametrised `database`, so pytest runs a module's tests on
SQLite, then on PostgreSQL. The PostgreSQL server (tests/postgres_server.py) is started when
the first test needs it and stopped at the end of the run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connections
from django.test.utils import setup_databases
from pytest_django import DjangoDbBlocker

from tests.daphne_server import Database, prepare_database
from tests.databases import default_database, site_database_settings
from tests.postgres_server import PostgresServer
from tests.redis_server import RedisServer

# The DATABASES alias of the in-process PostgreSQL test database.
POSTGRES_ALIAS = "postgres"


@pytest.fixture
def redis_server():
    """A fresh redis-server for one test, which may kill and restart it."""
    server = RedisServer().start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The run's PostgreSQL server (a cluster of its own on a free port)."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> str:
    """Which database a test runs on: every test that depends on this fixture runs on each."""
    return request.param


@pytest.fixture(scope="session")
def postgres_test_database(
    request: pytest.FixtureRequest,
    postgres_server: PostgresServer,
    django_db_blocker: DjangoDbBlocker,
) -> dict[str, Any]:
    """The DATABASES entry of a Django test database on the PostgreSQL server, made as
    pytest-django makes the SQLite one (Django's setup_databases: create, migrate), under the
    alias "postgres", with the settings a server on it would have. It goes with the server."""
    entry = site_database_settings(postgres_server.url("live_carts"))
    # Django makes any other alias after "default" unless told otherwise; "default" is
    # pytest-django's, made already.
    entry["TEST"] = {"DEPENDENCIES": []}
    settings.DATABASES[POSTGRES_ALIAS] = entry
    connections.configure_settings(settings.DATABASES)  # Django's defaults for the new entry
    with django_db_blocker.unblock():
        setup_databases(
            verbosity=request.config.option.verbose,
            interactive=False,
            aliases={POSTGRES_ALIAS},
            serialized_aliases=set(),
        )
    return connections.settings[POSTGRES_ALIAS]


@pytest.fixture(scope="module")
def django_database(
    request: pytest.FixtureRequest, database: str, django_db_setup: None
) -> Iterator[str]:
    """Django's default database in this process for a module's [sqlite] tests, then its
    [postgres] ones: pytest-django's SQLite test database, or the PostgreSQL test database in
    every thread; pytest-django's per-test rollback or flush works on either. (It needs
    pytest-django's databases made first: they are made from the default settings.)"""
    if database == "sqlite":
        yield database
        return
    with default_database(request.getfixturevalue("postgres_test_database")):
        yield database


@pytest.fixture(scope="session")
def postgres_server_template(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A database on the PostgreSQL server migrated and seeded once, to copy for servers."""
    name = "server_template"
    prepare_database(postgres_server.create_database(name), var_dir=tmp_path_factory.mktemp(name))
    return name


@pytest.fixture
def server_database(
    request: pytest.FixtureRequest, database: str, tmp_path: Path
) -> Iterator[Database]:
    """A migrated database with the demo catalogue, new for the test, for daphne servers
    (`DaphneServer(database)`, `server_env`): a SQLite file in tmp_path, or the URL of a
    database on the PostgreSQL server (a copy of `postgres_server_template`), dropped after."""
    if database == "sqlite":
        yield prepare_database(tmp_path / "db.sqlite3")
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    template = request.getfixturevalue("postgres_server_template")
    name = f"server_{uuid.uuid4().hex}"
    yield server.create_database(name, template=template)
    server.drop_database(name)
