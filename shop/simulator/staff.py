"""A staff client over the network, as the dashboard page is: log in, fetch a socket token,
open the staff socket, apply every diff to the snapshot (docs/protocol.md). Tests compare its
numbers with the simulator's `Truth` (`Truth.stats()` has the same shape)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .web import USER_AGENT, HTTPError, Node, cookie_header, fetch

# The aggregates of docs/protocol.md; the dashboard sends more (per-cart rows, catalogue details).
STATS = ("shoppers", "pages", "items", "pages_by_path")
_CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


class StaffLoginFailed(Exception):
    pass


def apply_diff(stats: dict[str, Any], diff: dict[str, Any]) -> None:
    """Apply a staff `diff` to the stats in place: in maps, 0 (or null) removes the entry."""
    for name, value in diff.items():
        if isinstance(value, dict) and isinstance(stats.get(name), dict):
            for key, entry in value.items():
                if entry:
                    stats[name][key] = entry
                else:
                    stats[name].pop(key, None)
        else:
            stats[name] = value


async def staff_token(
    node: Node, username: str, password: str, within: float = 10
) -> tuple[str, dict[str, str]]:
    """Log in through the login form and ask `/dashboard/token/` for a staff socket token;
    returns it with the session's cookies, which the socket's handshake must carry."""
    try:
        form = await fetch(node, "/accounts/login/", within=within)
        match = _CSRF_FIELD.search(form.body)
        if form.status != 200 or match is None:
            raise StaffLoginFailed(f"no login form at {node.origin}/accounts/login/")
        login = await fetch(
            node,
            "/accounts/login/",
            cookies=form.cookies,
            form={"username": username, "password": password, "csrfmiddlewaretoken": match[1]},
            within=within,
        )
        if login.status != 302:
            raise StaffLoginFailed(f"login as {username!r} refused (HTTP {login.status})")
        answer = await fetch(node, "/dashboard/token/", cookies=login.cookies, within=within)
    except HTTPError as error:
        raise StaffLoginFailed(str(error)) from None
    if answer.status != 200:
        raise StaffLoginFailed(f"{username!r} may not open the dashboard (HTTP {answer.status})")
    return json.loads(answer.body)["token"], answer.cookies


class StaffView:
    """The dashboard's numbers on one node, kept current in the background."""

    def __init__(self, ws: ClientConnection, stats: dict[str, Any]) -> None:
        self.ws = ws
        self.stats = stats
        self.diffs = 0
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(
        cls, url: str | Node, username: str, password: str, within: float = 10
    ) -> StaffView:
        node = url if isinstance(url, Node) else Node.parse(url)
        token, cookies = await staff_token(node, username, password, within)
        ws = await connect(
            node.ws_url(f"/ws/dashboard/?token={quote(token)}"),
            additional_headers={"Cookie": cookie_header(cookies)},
            origin=node.origin,  # type: ignore[arg-type]
            user_agent_header=USER_AGENT,
            proxy=None,
            open_timeout=within,
        )
        snapshot = json.loads(await asyncio.wait_for(ws.recv(), within))
        if snapshot.get("type") != "snapshot":
            await ws.close()
            raise StaffLoginFailed(f"the staff socket began with {snapshot.get('type')!r}")
        return cls(ws, snapshot["stats"])

    def current(self) -> dict[str, Any]:
        """The docs/protocol.md aggregates now (comparable with `Truth.stats()`)."""
        return {name: self.stats.get(name) for name in STATS}

    async def wait_for(self, expected: dict[str, Any], within: float) -> bool:
        """Wait until `current()` equals `expected`; False if it did not `within` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within), self._changed:
                await self._changed.wait_for(lambda: self.current() == expected)
                return True
        return False

    async def close(self) -> None:
        await self.ws.close()
        await self._reader

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                message = json.loads(raw)
                if message.get("type") == "diff":
                    apply_diff(self.stats, message["stats"])
                    self.diffs += 1
                    async with self._changed:
                        self._changed.notify_all()


@dataclass(frozen=True)
class Verdict:
    """Whether one node's staff view came to equal the expected stats, and what it showed."""

    node: Node
    matched: bool
    seen: dict[str, Any]


async def verify_staff_views(
    nodes: tuple[Node, ...],
    username: str,
    password: str,
    expected: dict[str, Any],
    within: float,
) -> list[Verdict]:
    """Open a staff view on every node and wait (at most `within` s) for `expected`.

    Every node aggregates its own replica's view, so every node must converge on it."""

    async def check(node: Node) -> Verdict:
        view = await StaffView.open(node, username, password, within)
        try:
            matched = await view.wait_for(expected, within)
            return Verdict(node, matched, view.current())
        finally:
            await view.close()

    return list(await asyncio.gather(*(check(node) for node in nodes)))
