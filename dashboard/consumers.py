"""The staff socket `/ws/dashboard/?token=...` (docs/protocol.md), behind
`StaffTokenAuthMiddleware`.

server -> staff: the hub's `snapshot`, then its `diff`s (see `dashboard.hub`), each with a
`catalog` `{"<item_id>": {"product", "size", "stock", "level"}}` read fresh from the
database for the items it mentions; and `{"type": "stock", "item_id": "<id>", "product",
"size", "stock", "level"}` when the shop pushes a stock level change. The staff client
sends nothing.
"""

import asyncio
import logging
from typing import Any

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from shop.broadcast import local_node
from shop.login_state import LOGIN_CHANGED_CLOSE_CODE, session_group
from tracker.process import ShuttingDown

from .catalog import describe_items
from .hub import get_hub
from .metrics import OPEN_STAFF_SOCKETS, STAFF_MESSAGES_SENT
from .middleware import staff_user_of_session

logger = logging.getLogger(__name__)

# How often an open staff socket re-checks that its session is still logged in and its user
# still active staff (a lost logout message is caught here). Closing
# within 60 s of a demotion needs this well below 60; tests lower it.
RECHECK_SECONDS = 20.0
# Close code when the user lost staff or active status, was deleted, or its session ended
# unheard. The page stops reconnecting with it and reloads (landing on the login or 403
# page). A logout heard as such closes with shop.login_state.LOGIN_CHANGED_CLOSE_CODE.
NOT_STAFF_CLOSE_CODE = 4403
# Close code when an open staff socket's feed fails (presenting or sending a message raised).
# The page reconnects and gets a fresh snapshot. Daphne (autobahn) lets an application close
# only with 1000 or 3000-4999: a close with 1011 raises there, and the socket stayed open
# and silent, the page frozen on its last figures.
FEED_FAILED_CLOSE_CODE = 4011


# Map entries (carts, items, paths) per staff message. Daphne refuses to send a message over
# 1 MiB; a cart's entry is ~110 bytes and a path's up to ~210, so 2,000 stay far below it.
FRAME_ENTRIES = 2000


def frames(message: dict[str, Any], size: int = FRAME_ENTRIES) -> list[dict[str, Any]]:
    """A snapshot or diff split into messages of at most `size` map entries each: the first
    keeps its type, scalars and other fields; the rest are diffs of the remaining entries.
    Applied in order they give what the one message would (entries are independent keys),
    so a shop with tens of thousands of carts online still gets its snapshot through."""
    stats = message.get("stats")
    if message["type"] not in {"snapshot", "diff"} or not stats:
        return [message]
    maps = [name for name, value in stats.items() if isinstance(value, dict)]
    entries = [(name, key, value) for name in maps for key, value in stats[name].items()]
    if len(entries) <= size:
        return [message]
    first = {name: value for name, value in stats.items() if name not in maps}
    if message["type"] == "snapshot":
        first.update({name: {} for name in maps})  # the client needs every map to apply to
    parts = [first] + [{} for _ in range(1, -(-len(entries) // size))]
    for index, (name, key, value) in enumerate(entries):
        parts[index // size].setdefault(name, {})[key] = value
    stamp = {"t": message["t"]} if "t" in message else {}
    return [{**message, "stats": parts[0]}] + [
        {"type": "diff", "stats": part, **stamp} for part in parts[1:]
    ]


class DashboardConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]  # channels: untyped
    """One staff dashboard: forwards this node's aggregates and the shop's stock changes."""

    async def __call__(
        self, scope: dict[str, Any], receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """Run the connection; however it ends, it leaves the hub. `disconnect` runs only
        when the client goes away; a consumer whose channel layer failed (Redis lost) or
        that was cancelled would otherwise keep its queue in the hub, filling with every
        diff, and its feed tasks, for as long as the process lives."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.leave_hub()

    async def connect(self) -> None:
        self.user_id = self.scope["user"].pk
        self.session_key = self.scope["session"].session_key
        try:
            self.hub = await get_hub()
        except ShuttingDown:
            await self.close()  # refused at the handshake: the page retries (another node)
            return
        # Stock level changes reach the hub from this node's stock feed and go through the
        # same queue as its other messages, so everything reaches the client in the order it
        # happened here.
        (await local_node()).stock.listeners.add(self.hub.stock_changed)
        # A logout of the session closes it (shop.login_state); joined before the session
        # is read again, so a logout in between is not missed.
        await self.channel_layer.group_add(session_group(self.session_key), self.channel_name)
        user = await database_sync_to_async(staff_user_of_session)(self.session_key, self.user_id)
        if user is None:
            await self.channel_layer.group_discard(
                session_group(self.session_key), self.channel_name
            )
            await self.close()  # not accepted yet: the server answers 403
            return
        await self.accept()
        self.queue = self.hub.register()
        OPEN_STAFF_SOCKETS.inc()  # paired with the unregister in disconnect
        self.tasks = [asyncio.create_task(self._pump()), asyncio.create_task(self._recheck())]

    def leave_hub(self) -> None:
        """Stop the feed, unregister from the hub, uncount (once; no I/O)."""
        for task in getattr(self, "tasks", ()):
            task.cancel()
        self.tasks = []
        if hasattr(self, "queue"):
            self.hub.unregister(self.queue)
            OPEN_STAFF_SOCKETS.dec()
            del self.queue

    async def disconnect(self, code: int) -> None:
        self.leave_hub()
        await self.channel_layer.group_discard(session_group(self.session_key), self.channel_name)

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        pass  # the staff client has nothing to say: any frame, text or binary, is ignored

    async def login_changed(self, event: dict[str, Any]) -> None:
        """Its session logged out (or in again): the page reloads."""
        await self.close(code=LOGIN_CHANGED_CLOSE_CODE)

    async def _pump(self) -> None:
        try:
            while True:
                for frame in frames(await self.queue.get()):
                    message = await self._present(frame)
                    if message is not None:
                        await self.send_json(message)
                        STAFF_MESSAGES_SENT.labels(message["type"]).inc()
        except Exception:
            logger.exception("staff socket feed failed")
            await self.close(code=FEED_FAILED_CLOSE_CODE)

    async def _present(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """The message as the client gets it, with catalogue details from the database."""
        if message["type"] == "stock":
            catalog = await database_sync_to_async(describe_items)([message["item_id"]])
            entry = catalog.get(message["item_id"])
            return {**message, **entry} if entry is not None else None
        items = message["stats"].get("items", {})
        ids = [item_id for item_id, quantity in items.items() if quantity]
        catalog = await database_sync_to_async(describe_items)(ids) if ids else {}
        return {**message, "catalog": catalog}

    async def _recheck(self) -> None:
        while True:
            await asyncio.sleep(RECHECK_SECONDS)
            user = await database_sync_to_async(staff_user_of_session)(
                self.session_key, self.user_id
            )
            if user is None:
                await self.close(code=NOT_STAFF_CLOSE_CODE)
                return
