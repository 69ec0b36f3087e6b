"""Running the same tests on SQLite and on PostgreSQL (the fixtures are in tests/conftest.py).

The site's code names no database: `transaction.atomic()`, `connection` and the ORM all use
Django's "default" alias. So a test runs on PostgreSQL by pointing "default" at a PostgreSQL
test database for a while, in every thread (consumers reach the database from a worker
thread, concurrent buyers from threads of their own): `default_database`.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

from asgiref.local import Local
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created


def site_database_settings(url: str) -> dict[str, Any]:
    """DATABASES["default"] as shop/settings.py makes it of DATABASE_URL=url: the settings
    (connection age, options) a server on that database runs with. The settings module runs
    again for this, in a module object of its own, with that one variable set."""
    spec = importlib.util.find_spec("shop.settings")
    module = importlib.util.module_from_spec(spec)
    with mock.patch.dict(os.environ, {"DATABASE_URL": url}):
        spec.loader.exec_module(module)
    return module.DATABASES["default"]


def _point_default_at(settings_dict: dict[str, Any]) -> None:
    connections.settings[DEFAULT_DB_ALIAS] = settings_dict  # (settings.DATABASES too: one dict)
    # Django keeps one connection object per thread and alias, made from the settings on
    # first use; a fresh store makes every thread's next one from the new settings.
    connections._connections = Local(connections.thread_critical)


@contextmanager
def default_database(settings_dict: dict[str, Any]) -> Iterator[None]:
    """Inside, Django's "default" alias is the database of `settings_dict` (a configured
    DATABASES entry), in every thread. The caller's connections are closed on the way in and
    out, and so is every connection opened inside, whichever thread opened it (they are idle
    by then: a test and its fixtures are over)."""
    original = connections.settings[DEFAULT_DB_ALIAS]
    opened: list[BaseDatabaseWrapper] = []

    def track(sender: type, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
        if connection.alias == DEFAULT_DB_ALIAS:
            opened.append(connection)

    connections.close_all()
    connection_created.connect(track, weak=False)
    _point_default_at(dict(settings_dict))
    try:
        yield
    finally:
        connection_created.disconnect(track)
        for wrapper in opened:
            wrapper.inc_thread_sharing()  # Django refuses to close another thread's otherwise
            try:
                wrapper.close()
            finally:
                wrapper.dec_thread_sharing()
        _point_default_at(original)
