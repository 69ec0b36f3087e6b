"""manage.py runcluster: N daphne nodes on this machine sharing one Redis, as one cluster.

Without --redis-url (or REDIS_URL) a throwaway redis-server (no persistence) is started on
a free port. The database is migrated once (and, with DEBUG off, the static files collected:
shop.checks), then node i serves 127.0.0.1:<port + i> with
TRACKER_NODE_NAME=node-<i>. Every child's output is shown prefixed by its name. Ctrl-C or
SIGTERM stops the nodes with SIGTERM (their trackers say goodbye, so peers drop their rows
at once) and then Redis, killing whatever does not stop in time; a second Ctrl-C kills at
once. Children run in their own sessions, so the terminal's Ctrl-C reaches only this
command and the order of shutdown is ours; on Linux they also get SIGTERM if this command
dies without cleaning up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

import redis
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from shop.checks import static_files_must_be_collected

HOST = "127.0.0.1"
READY_TIMEOUT = 30.0  # seconds for a node to accept connections
REDIS_READY_TIMEOUT = 10.0
REDIS_STOP_TIMEOUT = 5.0
PR_SET_PDEATHSIG = 1


@dataclass(eq=False)
class Child:
    """A child process whose output is streamed with its name in front."""

    name: str
    argv: list[str]
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def started(self) -> asyncio.subprocess.Process:
        """The process, once spawned."""
        assert self.process is not None
        return self.process

    @property
    def pid(self) -> int:
        return self.started.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def signal(self, signum: int) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.started.send_signal(signum)


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the parent dies (Linux only)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def port_in_use(port: int) -> bool:
    """True if something listens on HOST:port (a port in TIME_WAIT is free to daphne too)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return True
    return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


async def accepts(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 1)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class Command(BaseCommand):
    help = (
        "Run a local cluster: N daphne processes on consecutive ports sharing one Redis "
        "(started here unless --redis-url or REDIS_URL is given). Ctrl-C stops everything."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--nodes", type=int, default=2, help="daphne processes (2)")
        parser.add_argument(
            "--port", type=int, default=8001, help="port of node-0; node i gets port + i (8001)"
        )
        parser.add_argument(
            "--redis-url",
            help="an existing Redis to share (default: REDIS_URL, else a redis-server started "
            "here on a free port without persistence)",
        )
        parser.add_argument(
            "--seed-catalog", action="store_true", help="also load the demo catalogue"
        )
        parser.add_argument(
            "--stop-timeout",
            type=float,
            default=10.0,
            help="seconds the nodes get to stop after SIGTERM before they are killed (10)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        count: int = options["nodes"]
        if count < 1:
            raise CommandError("--nodes must be at least 1")
        if not options["stop_timeout"] > 0:
            raise CommandError("--stop-timeout must be a positive number of seconds")
        ports = self.check_ports(options["port"], count)
        redis_url = options["redis_url"] or settings.REDIS_URL
        if redis_url:
            self.check_redis(redis_url)
            redis_server = None
        else:
            redis_server = shutil.which("redis-server")
            if redis_server is None:
                raise CommandError(
                    "redis-server is not installed (Debian: apt-get install redis-server); "
                    "install it or give --redis-url"
                )
        verbosity = options["verbosity"]
        call_command(
            "migrate", interactive=False, verbosity=max(verbosity - 1, 0), stdout=self.stdout
        )
        self.stdout.write(f"database migrated: {settings.DATABASES['default']['NAME']}")
        if static_files_must_be_collected():
            call_command("collectstatic", interactive=False, verbosity=0)
            self.stdout.write(f"static files collected: {settings.STATIC_ROOT}")
        if options["seed_catalog"]:
            call_command("seed_catalog", verbosity=max(verbosity - 1, 0), stdout=self.stdout)
        cluster = Cluster(self, ports, redis_url, redis_server, options["stop_timeout"])
        if not asyncio.run(cluster.run()):
            raise CommandError("every node exited; the cluster is stopped")

    def check_ports(self, first: int, count: int) -> list[int]:
        ports = list(range(first, first + count))
        if first < 1 or ports[-1] > 65535:
            raise CommandError(f"ports {first}..{ports[-1]} are not all between 1 and 65535")
        for index, port in enumerate(ports):
            if port_in_use(port):
                raise CommandError(
                    f"port {port} (node-{index}) is in use on {HOST}: stop what listens there "
                    "or choose another --port"
                )
        return ports

    def check_redis(self, url: str) -> None:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        try:
            client.ping()
        except (redis.RedisError, ValueError) as error:
            raise CommandError(f"cannot reach Redis at {url}: {error}") from None
        finally:
            client.close()


class Cluster:
    """The running processes: start, stream, watch, stop."""

    def __init__(
        self,
        command: Command,
        ports: list[int],
        redis_url: str | None,
        redis_server: str | None,
        stop_timeout: float,
    ) -> None:
        self.out = command.stdout
        self.style = command.style
        self.ports = ports
        self.redis_url = redis_url
        self.redis_server = redis_server
        self.stop_timeout = stop_timeout
        self.redis: Child | None = None
        self.nodes: list[Child] = []
        self.stopping = asyncio.Event()
        self.hurry = asyncio.Event()  # a second Ctrl-C: kill now
        self.deserted = False  # every node exited on its own

    async def run(self) -> bool:
        """Run until a signal (True) or until every node has exited (False)."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.on_signal)
        try:
            if self.redis_server is not None:
                await self.start_redis(self.redis_server)
            await self.start_nodes()
            await self.stopping.wait()
        finally:
            await self.stop()
        return not self.deserted

    def on_signal(self) -> None:
        if self.stopping.is_set():
            self.say(self.style.WARNING("second interrupt: killing everything now"))
            self.hurry.set()
        self.stopping.set()

    def say(self, message: str) -> None:
        self.out.write(message)
        self.out.flush()  # a pipe is block-buffered; whoever reads it wants lines now

    async def spawn(self, child: Child) -> None:
        child.process = await asyncio.create_subprocess_exec(
            *child.argv,
            cwd=settings.BASE_DIR,
            env=child.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        child.tasks = [
            asyncio.create_task(self.stream(child)),
            asyncio.create_task(self.watch(child)),
        ]

    async def stream(self, child: Child) -> None:
        assert child.process is not None and child.process.stdout is not None
        async for line in child.process.stdout:
            self.say(f"[{child.name}] {line.decode(errors='replace').rstrip()}")

    async def watch(self, child: Child) -> None:
        """Say so when a child exits on its own; stop if no node is left."""
        code = await child.started.wait()
        if self.stopping.is_set():
            return
        self.say(
            self.style.ERROR(
                f"{child.name} (pid {child.pid}) exited with code {code}"
                + (f" (signal {-code})" if code < 0 else "")
            )
        )
        if child is self.redis:
            self.say(self.style.ERROR("the nodes cannot reach each other until Redis is back"))
        elif any(node.running for node in self.nodes):
            self.say(self.style.WARNING("the other nodes keep running"))
        else:
            self.say(self.style.ERROR("no node is left; stopping"))
            self.deserted = True
            self.stopping.set()

    async def start_redis(self, server: str) -> None:
        port = free_port()
        directory = tempfile.mkdtemp(prefix="runcluster-redis-")
        self.redis = Child(
            "redis",
            [server, "--port", str(port), "--bind", HOST, "--save", "",
             "--appendonly", "no", "--dir", directory, "--loglevel", "warning"],
            dict(os.environ),
        )  # fmt: skip
        await self.spawn(self.redis)
        self.redis_url = f"redis://{HOST}:{port}/0"
        deadline = asyncio.get_running_loop().time() + REDIS_READY_TIMEOUT
        while not await self.redis_answers(port):
            if not self.redis.running or asyncio.get_running_loop().time() > deadline:
                raise CommandError(f"redis-server did not start on port {port}")
            await asyncio.sleep(0.05)
        self.say(
            f"Redis: {self.redis_url}  (redis-server pid {self.redis.pid}, started here, "
            "no persistence)"
        )

    async def redis_answers(self, port: int) -> bool:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 1)
        except (OSError, TimeoutError):
            return False
        try:
            writer.write(b"PING\r\n")
            return (await asyncio.wait_for(reader.readline(), 1)).startswith(b"+PONG")
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()

    async def start_nodes(self) -> None:
        assert self.redis_url is not None  # given, or the one start_redis started
        if self.redis is None:
            self.say(f"Redis: {self.redis_url}")
        for index, port in enumerate(self.ports):
            env = {
                **os.environ,
                "REDIS_URL": self.redis_url,
                "TRACKER_NODE_NAME": f"node-{index}",
                "PYTHONUNBUFFERED": "1",
            }
            argv = [sys.executable, "-m", "daphne", "-b", HOST, "-p", str(port)]
            node = Child(f"node-{index}", [*argv, "shop.asgi:application"], env)
            await self.spawn(node)
            self.nodes.append(node)
            self.say(f"node-{index}: http://{HOST}:{port}/  (pid {node.pid})")
        self.say("Press Ctrl-C to stop the cluster.")
        await asyncio.gather(
            *(self.ready(node, port) for node, port in zip(self.nodes, self.ports, strict=True))
        )

    async def ready(self, node: Child, port: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT
        while node.running and not self.stopping.is_set():
            if await accepts(port):
                self.say(self.style.SUCCESS(f"{node.name} is up on http://{HOST}:{port}/"))
                return
            if loop.time() > deadline:
                self.say(self.style.WARNING(f"{node.name} does not answer on port {port} yet"))
                return
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """Nodes first (SIGTERM: goodbye through Redis), then Redis; kill what hangs."""
        self.stopping.set()
        running = [node for node in self.nodes if node.running]
        if running:
            self.say(f"stopping {len(running)} node(s) with SIGTERM (trackers say goodbye)")
        await self.terminate(running, self.stop_timeout)
        if self.redis is not None:
            await self.terminate([self.redis], REDIS_STOP_TIMEOUT)
        for child in [*self.nodes, *([self.redis] if self.redis else [])]:
            await asyncio.gather(*child.tasks, return_exceptions=True)
        self.say("cluster stopped")

    async def terminate(self, children: list[Child], grace: float) -> None:
        """SIGTERM, wait up to `grace` s (less after a second Ctrl-C), then SIGKILL."""
        for child in children:
            child.signal(signal.SIGTERM)

        async def all_exited() -> None:
            for child in children:
                await child.started.wait()

        waits = [asyncio.ensure_future(all_exited()), asyncio.ensure_future(self.hurry.wait())]
        await asyncio.wait(waits, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        for child in children:
            if child.running:
                self.say(self.style.WARNING(f"{child.name} did not stop in time: killed"))
                child.signal(signal.SIGKILL)
            await child.started.wait()
            self.say(f"{child.name} stopped (exit code {child.started.returncode})")
