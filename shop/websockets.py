"""What daphne and autobahn spend on every websocket that the site does without.

- What an open socket keeps of its handshake: nothing it needs. An open websocket under
  daphne held, besides its own state, everything its handshake was made of (tracemalloc
  in a node holding 1,000 shopper sockets, bench/README.md): Twisted's HTTP channel and
  the upgrade request with its parsed headers (the channel stays the TCP connection's
  producer for the connection's life), autobahn's copy of the raw request and of its
  headers and the response it sent, the `ConnectionRequest` daphne keeps for its log lines,
  and daphne's cleaned header list, which is also the ASGI scope's `headers`: ~4 KB per
  socket. `apply()` makes daphne's websocket protocol drop them as soon as the socket is
  open. The ASGI application has read the headers by then (the origin check, the cookies
  and whatever runs before the accept); a scope's `headers` is empty afterwards. Daphne
  itself only reads the request's path again (its access log lines), which is kept.
- autobahn formats its whole configuration (`pformat` of ~30 settings) for a debug log line
  on every new connection, whether or not debug lines are logged: ~3 % of a node's CPU
  while shoppers connect (py-spy). `apply()` makes its `pformat` format only when txaio
  logs at debug level; otherwise it returns "" for a line that is dropped anyway. (Its one
  other use, `Timings.__str__`, serves autobahn's `trackTimings`, which daphne never
  turns on.)
"""

from __future__ import annotations

import pprint
from typing import Any

# autobahn's attributes holding the parsed handshake and the response sent
# (WebSocketServerProtocol.processHandshake, succeedHandshake); nothing reads them after it.
_HANDSHAKE_ATTRIBUTES = (
    "http_request_data",
    "http_headers",
    "http_status_line",
    "http_request_uri",
    "http_request_path",
    "http_request_params",
    "http_request_host",
    "http_response_data",
)


class _OpenedRequest:
    """What daphne reads of a handshake's request once the socket is open (its log lines)."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


def release_handshake(protocol: Any) -> None:
    """Drop what an open daphne websocket keeps of its handshake (see the module)."""
    from twisted.web.http import HTTPChannel

    transport = protocol.transport
    channel = getattr(transport, "producer", None)
    if isinstance(channel, HTTPChannel):  # the upgrade's: nothing to produce any more
        transport.unregisterProducer()
        for request in channel.requests:  # the upgrade request and its channel: a cycle
            request.channel = None
        channel.requests.clear()
    request = getattr(protocol, "request", None)
    if request is not None and not isinstance(request, _OpenedRequest):
        protocol.request = _OpenedRequest(request.path)
    for name in _HANDSHAKE_ATTRIBUTES:
        if getattr(protocol, name, None) is not None:
            setattr(protocol, name, None)
    headers = getattr(protocol, "clean_headers", None)
    if isinstance(headers, list):
        headers.clear()  # the scope's `headers` (the same list)


def pformat_when_debugging(value: object, *args: Any, **kwargs: Any) -> str:
    """autobahn's `pformat`: the text only when txaio logs at debug level (see the module)."""
    import txaio

    if txaio.get_global_log_level() in _DEBUG_LEVELS:  # type: ignore[attr-defined]
        return pprint.pformat(value, *args, **kwargs)
    return ""


_DEBUG_LEVELS = ("debug", "trace")


def apply() -> None:
    """Make daphne's websocket protocol release its handshake once open, and autobahn
    format its configuration only for debug logs (idempotent)."""
    from autobahn.websocket import protocol
    from daphne.ws_protocol import WebSocketProtocol

    protocol.pformat = pformat_when_debugging  # type: ignore[assignment]

    opened = WebSocketProtocol.onOpen
    if getattr(opened, "releases_handshake", False):
        return

    def onOpen(self: WebSocketProtocol) -> None:  # noqa: N802 - autobahn's name
        try:
            opened(self)
        finally:
            release_handshake(self)

    onOpen.releases_handshake = True  # type: ignore[attr-defined]
    WebSocketProtocol.onOpen = onOpen
