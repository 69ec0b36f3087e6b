"""A real, throwaway PostgreSQL server on a free port, started by the tests as they start
redis-server (tests/redis_server.py).

    server = PostgresServer().start()     # initdb into a temporary directory, then postgres
    server.create_database("shop")
    server.url("shop")                    # postgres://live_carts:...@127.0.0.1:<port>/shop
    server.stop()                         # fast shutdown, no process and no directory left

Debian's binaries (`apt-get install postgresql`: /usr/lib/postgresql/<version>/bin, the
newest version), else initdb and postgres on PATH. PostgreSQL refuses to run as root: as
root (CI), initdb and the server run as the `postgres` system user that the package creates,
in a data directory it owns; as anyone else, as that user. Durability is off (fsync,
synchronous commit, full page writes): the data lives for one test run.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

from tests.redis_server import free_port

USER = "live_carts"  # the cluster's superuser, whom every client logs in as
SYSTEM_USER = "postgres"  # who runs the server when the tests run as root


def bin_dir() -> Path:
    """Where initdb and postgres are: Debian's newest version, else the directory on PATH."""
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda path: [
            int(part) for part in path.parent.parent.name.split(".") if part.isdigit()
        ],
    )
    if debian:
        return debian[-1].parent
    on_path = shutil.which("initdb")
    if on_path is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install -y postgresql)")
    return Path(on_path).resolve().parent


class PostgresServer:
    """A PostgreSQL cluster of its own in a temporary directory: TCP on 127.0.0.1:<port>
    (password authentication), its unix socket in that directory."""

    def __init__(self, port: int | None = None) -> None:
        self.bin_dir = bin_dir()
        self.port = port or free_port()
        self.password = secrets.token_urlsafe(16)
        self.dir = Path(tempfile.mkdtemp(prefix="postgres-test-"))
        self.data_dir = self.dir / "data"
        self.log_path = self.dir / "postgres.log"
        self.process: subprocess.Popen | None = None
        # Who runs initdb and postgres: the postgres system user when we are root.
        self._as: dict = {}
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam(SYSTEM_USER)
            except KeyError:
                raise RuntimeError(
                    f"running as root, PostgreSQL needs the {SYSTEM_USER!r} system user "
                    "(apt-get install -y postgresql creates it)"
                ) from None
            self._as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
            os.chown(self.dir, account.pw_uid, account.pw_gid)

    def url(self, database: str = "postgres") -> str:
        """DATABASE_URL of one of the server's databases."""
        return f"postgres://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(
            [str(self.bin_dir / args[0]), *args[1:]],
            cwd=self.dir,  # (root's working directory may be closed to the postgres user)
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
            **self._as,
            **kwargs,
        )

    def start(self, timeout: float = 30) -> PostgresServer:
        password_file = self.dir / "password"
        password_file.write_text(self.password)
        if self._as:
            os.chown(password_file, self._as["user"], self._as["group"])
        initdb = self._run(
            "initdb",
            "--pgdata",
            str(self.data_dir),
            "--username",
            USER,
            "--pwfile",
            str(password_file),
            "--auth-local",
            "trust",  # only the owner can reach the socket's directory
            "--auth-host",
            "scram-sha-256",
            "--encoding",
            "UTF8",
            "--no-locale",
            "--no-sync",
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        output, _ = initdb.communicate(timeout=120)
        password_file.unlink()
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed ({initdb.returncode}):\n{output}")
        with open(self.log_path, "ab") as log:
            self.process = self._run(
                "postgres",
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.dir}",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                stdout=log,
                stderr=subprocess.STDOUT,
                # Not in pytest's process group: Ctrl-C in a terminal goes to pytest, whose
                # session teardown stops the server.
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise RuntimeError(f"postgres exited with {code} while starting:\n{self.logs()}")
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return self
            except psycopg.OperationalError:  # not listening yet, or still starting up
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"postgres did not start on port {self.port} in {timeout}s")

    def stop(self, timeout: float = 10) -> None:
        """Fast shutdown (open sessions are ended), then remove the data directory."""
        if self.process is not None:
            for sig in (signal.SIGINT, signal.SIGQUIT):  # fast, then immediate shutdown
                self.process.send_signal(sig)
                try:
                    self.process.wait(timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
            else:  # the backends exit by themselves when they see the postmaster gone
                self.process.kill()
                self.process.wait()
            self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def execute(self, statement: sql.Composable) -> None:
        """One statement in the `postgres` database, outside a transaction."""
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(statement)

    def create_database(self, name: str, template: str | None = None) -> str:
        """A new database (a copy of `template` if given); returns its URL."""
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        self.execute(statement)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending any session still connected to it."""
        self.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def logs(self, tail: int = 100) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-tail:])
