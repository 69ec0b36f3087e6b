"""The simulator's side of HTTP: node addresses and a small asyncio HTTP/1.0 client.

HTTP/1.0 with `Connection: close` keeps the client tiny (no chunked bodies, no keep-alive:
the server closes after the response) and needs no thread pool, so thousands of simulated
shoppers can fetch their first page concurrently on one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import urlencode, urlsplit

USER_AGENT = "live-carts-simulator"


@dataclass(frozen=True)
class Node:
    """One server, given as ws://HOST:PORT (or wss://, http://, https://)."""

    secure: bool
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Node:
        parts = urlsplit(url.strip())
        if parts.scheme not in {"ws", "wss", "http", "https"}:
            raise ValueError(f"{url!r}: the URL must start with ws://, wss://, http:// or https://")
        if not parts.hostname:
            raise ValueError(f"{url!r}: the URL has no host")
        if parts.path not in {"", "/"} or parts.query or parts.fragment:
            raise ValueError(f"{url!r}: give the server only (scheme://host:port), not a path")
        secure = parts.scheme in {"wss", "https"}
        try:
            port = parts.port or (443 if secure else 80)
        except ValueError:
            raise ValueError(f"{url!r}: the port is not a number from 1 to 65535") from None
        return cls(secure, parts.hostname, port)

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def origin(self) -> str:
        """What a browser on this site sends as Origin (checked against ALLOWED_HOSTS)."""
        return f"{'https' if self.secure else 'http'}://{self.netloc}"

    def ws_url(self, path: str) -> str:
        return f"{'wss' if self.secure else 'ws'}://{self.netloc}{path}"

    def __str__(self) -> str:
        return self.ws_url("")


@dataclass(frozen=True)
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: str
    cookies: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


class HTTPError(Exception):
    """The server could not be reached, or answered with something that is not HTTP."""


def cookie_header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


async def fetch(
    node: Node,
    path: str,
    *,
    cookies: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    within: float = 10.0,
) -> Response:
    """GET `path` (POST `form` if given) on `node` within `within` seconds. The response's
    cookies are the request's, updated by its Set-Cookie headers."""
    cookies = dict(cookies or {})
    body = urlencode(form).encode() if form is not None else b""
    lines = [
        f"{'POST' if form is not None else 'GET'} {path} HTTP/1.0",
        f"Host: {node.netloc}",
        f"User-Agent: {USER_AGENT}",
        "Connection: close",
    ]
    if cookies:
        lines.append(f"Cookie: {cookie_header(cookies)}")
    if form is not None:
        lines += [
            "Content-Type: application/x-www-form-urlencoded",
            f"Content-Length: {len(body)}",
            f"Origin: {node.origin}",  # Django's CSRF check compares it with the host
        ]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_connection(
                node.host, node.port, ssl=ssl.create_default_context() if node.secure else None
            )
            try:
                writer.write(request)
                await writer.drain()
                raw = await reader.read()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError:
        raise HTTPError(f"no answer from {node.origin}{path} within {within:g} s") from None
    except OSError as error:
        raise HTTPError(f"{node.origin}{path}: {error.strerror or error}") from None
    return parse_response(raw, cookies)


def parse_response(raw: bytes, cookies: dict[str, str]) -> Response:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    match = re.match(r"HTTP/\d\.\d (\d{3})", status_line)
    if match is None:
        raise HTTPError(f"not an HTTP response: {status_line[:80]!r}")
    headers = [
        (name.strip(), value.strip())
        for name, sep, value in (line.partition(":") for line in header_lines)
        if sep
    ]
    cookies = dict(cookies)
    for name, value in headers:
        if name.lower() == "set-cookie":
            jar = SimpleCookie()
            jar.load(value)
            cookies.update({key: morsel.value for key, morsel in jar.items()})
    return Response(int(match.group(1)), headers, body.decode("utf-8", "replace"), cookies)
