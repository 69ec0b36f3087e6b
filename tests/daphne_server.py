"""Real daphne processes serving shop.asgi:application, for browser and cluster tests.

One server with its own database:

    with DaphneServer() as server:          # migrates and seeds a fresh SQLite file
        urlopen(server.url + "/")

Several nodes sharing one database and one Redis (a cluster):

    db = prepare_database(tmp_path / "db.sqlite3")   # or a PostgreSQL URL (tests/conftest.py's
                                                     # server_database fixture makes either)
    nodes = [DaphneServer(db, redis_url=redis.url, env={"TRACKER_NODE_NAME": f"n{i}"}).start()
             for i in range(3)]
    nodes[0].kill()                          # a crash; .stop() is a graceful SIGTERM

Each server logs to `server.log_path` (shown by `server.logs()`), kept after it stops.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = "tests.settings"
# Variables of the outer environment that must not leak into a server's configuration.
_SITE_VARIABLES = (
    "DATABASE_URL",
    "REDIS_URL",
    "TRACKER_REDIS_URL",
    "VAR_DIR",
    "TRACKER_NODE_NAME",
    "DEBUG",
)


# A server's database: a SQLite file (a Path) or any DATABASE_URL (a str).
Database = Path | str


def database_url(database: Database) -> str:
    """The DATABASE_URL of a SQLite file, or the URL itself."""
    if isinstance(database, str):
        return database
    return f"sqlite:///{Path(database).resolve()}"


def server_env(
    var_dir: Path,
    database: Database,
    redis_url: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a server process or a management command run for it."""
    env = {k: v for k, v in os.environ.items() if k not in _SITE_VARIABLES}
    env.update(
        DJANGO_SETTINGS_MODULE=SETTINGS,
        VAR_DIR=str(var_dir),
        DATABASE_URL=database_url(database),
        PYTHONUNBUFFERED="1",
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(extra or {})
    return env


def manage(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess:
    """Run `manage.py <args>` in a subprocess; raises with its output if it fails."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result


def create_staff_user(env: Mapping[str, str], username: str, password: str) -> None:
    """An active staff user in the database of a server (or management command) env."""
    manage(
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model; "
        f"get_user_model().objects.create_user({username!r}, password={password!r}, "
        "is_staff=True)",
        env=env,
    )


def prepare_database(
    database: Database, *, seed: bool = True, var_dir: Path | None = None
) -> Database:
    """Bring a database up to date (migrate, then seed_catalog): a SQLite file, created if
    missing (its folder is the commands' var_dir), or an existing database by URL (var_dir
    needed)."""
    if isinstance(database, str):
        if var_dir is None:
            raise ValueError("prepare_database(url) needs a var_dir for the commands")
    else:
        database = Path(database)
        database.parent.mkdir(parents=True, exist_ok=True)
        var_dir = var_dir or database.parent
    env = server_env(var_dir, database)
    manage("migrate", "--noinput", env=env)
    if seed:
        manage("seed_catalog", env=env)
    return database


class DaphneServer:
    """One daphne process on 127.0.0.1:<port>.

    database: a prepared database (a SQLite file or a URL, see `prepare_database`) to share
    with other servers; without it the server gets its own SQLite file, migrated and seeded,
    in its var_dir. redis_url: join a cluster through Redis
    (channel layer and tracker); without it the server runs the embedded single-node default.
    env: extra environment variables (e.g. TRACKER_NODE_NAME, DASHBOARD_DIFF_INTERVAL).
    code: the checkout whose site it serves (benchmarks compare an earlier revision's; the
    same database schema and installed packages).
    """

    def __init__(
        self,
        database: Database | None = None,
        *,
        redis_url: str | None = None,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        var_dir: Path | None = None,
        code: Path = ROOT,
    ) -> None:
        self.code = code
        self.var_dir = Path(var_dir or tempfile.mkdtemp(prefix="daphne-test-"))
        self.var_dir.mkdir(parents=True, exist_ok=True)
        self.database = database or prepare_database(self.var_dir / "db.sqlite3")
        self.redis_url = redis_url
        self.extra_env = dict(env or {})
        self.port = port or free_port()
        self.log_path = self.var_dir / f"daphne-{self.port}.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return server_env(self.var_dir, self.database, self.redis_url, self.extra_env)

    def start(self, timeout: float = 30) -> DaphneServer:
        """Start the process and wait until it answers HTTP."""
        if self.process is not None:
            raise RuntimeError(f"daphne on port {self.port} is already running")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "daphne",
                    "-b",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "shop.asgi:application",
                ],
                cwd=self.code,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise RuntimeError(f"daphne exited with {code} while starting:\n{self.logs()}")
            if self._answers():
                return self
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(
            f"daphne did not answer on port {self.port} in {timeout}s:\n{self.logs()}"
        )

    def _answers(self) -> bool:
        try:
            # The login page: served without touching the cart tables.
            with urllib.request.urlopen(f"{self.url}/accounts/login/", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # any HTTP answer means the server is up
        except OSError:
            return False

    def stop(self, timeout: float = 10) -> None:
        """Graceful shutdown (SIGTERM), as a deploy would do; SIGKILL if it hangs."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash would: no goodbye to peers, sockets drop."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait()
        self.process = None

    def restart(self, timeout: float = 30) -> DaphneServer:
        """Stop and start again on the same port, database and environment."""
        self.stop()
        return self.start(timeout)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def logs(self, tail: int = 200) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-tail:])

    def __enter__(self) -> DaphneServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
