"""Foreign, broken and replayed frames for a tracker's channels (the frame fuzz test and
bench/frame_fuzzer.py).

From genuine frames captured off a live cluster it makes, by kind:
- `random`: random bytes;
- `mutated`: a genuine frame with bytes flipped, cut short or appended to (its signature,
  or for unsigned clusters its msgpack, no longer holds);
- `foreign`: frames of another protocol version, and version 1 frames of the wrong shape
  (`"d"` not a map: the frame that once silenced a node);
- `reshaped`: a genuine body with one field of the wrong type or out of range, signed
  with the cluster's own secret, so that only the checks of every field can reject it;
- `replayed`: a genuine frame sent again, late: valid, and harmless to a CRDT.
Every kind but `replayed` must be rejected; `expected_reason` says with which reason.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import redis.asyncio as aioredis

from tracker import wire

KINDS = ("random", "mutated", "foreign", "reshaped", "replayed")


def body_of(frame: bytes, signed: bool) -> dict[str, Any]:
    start = 5 + (wire.TAG_SIZE if signed else 0)
    return msgpack.unpackb(frame[start:], strict_map_key=False)


def _wrong_values(rng: random.Random) -> list[Any]:
    return [rng.choice(["x", "", "🙂"]), -rng.randrange(1, 10**6), 1.5, [1, 2], {"k": 1}, None]


# Mutations of a heartbeat or transfer body that no valid frame has, one field each.
def _reshape(body: dict[str, Any], rng: random.Random) -> dict[str, Any] | Any:
    body = dict(body)
    rows = [(t, entries) for t, entries in body["d"].items() if entries]
    choices: list[Callable[[], Any]] = [
        lambda: body.__setitem__("d", rng.choice([[1], "d", 7, None])),
        lambda: body.__setitem__("x", rng.choice([{"1": 1}, "x", 3, [0], [-1]])),
        lambda: body.__setitem__("s", rng.choice(["0", -1, 1.5, None, body["e"] + 1])),
        lambda: body.__setitem__("e", rng.choice(["9", -1, body["s"] - 1, 2**63])),
        lambda: body.__setitem__("a", rng.choice(["old", -5, None, [1]])),
        lambda: body.__setitem__("n", rng.choice([0, -3, "1", None, 5000])),
        lambda: body.__setitem__("o", rng.choice([2, "yes", [1]])),
        lambda: body.__setitem__("r", rng.choice([42, "", "nocolon", None, "x" * 300])),
        lambda: body.__setitem__("t", rng.choice(["??", 1, None])),
        lambda: body.pop(rng.choice(["s", "e", "d", "x", "a", "n", "r", "t"])),
        lambda: rng.choice([[body], "body", 17]),  # not a map at all
    ]
    if rows:
        topic, entries = rng.choice(rows)

        def bad_row() -> None:
            entry = list(rng.choice(entries))
            field = rng.randrange(5)
            if field == 0:
                entry = entry[:3]
            elif field == 1:
                entry[0] = rng.choice([body["e"] + 1, -1, "1", 0])
            elif field in (2, 3):
                entry[field - 1] = rng.choice(_wrong_values(rng)[1:])
            else:
                entry[3] = rng.choice([[1], "meta", 5, None])
            body["d"] = {**body["d"], topic: [*entries, entry]}

        choices += [bad_row, bad_row, lambda: body.__setitem__("d", {7: entries})]
    result = rng.choice(choices)()
    return body if result is None else result


class FrameFuzzer:
    def __init__(self, genuine: list[bytes], secret: str | None, seed: int = 0) -> None:
        self.deltas = [f for f in genuine if _kind(f, secret is not None) in ("hb", "tx")]
        if not self.deltas:
            raise ValueError("capture some genuine heartbeats first")
        self.genuine = genuine
        self.signed = secret is not None
        self.codec = wire.Codec(secret)
        self.rng = random.Random(seed)

    def frame(self, kind: str) -> bytes:
        rng = self.rng
        if kind == "random":
            return rng.randbytes(rng.randrange(0, 200))
        if kind == "mutated":
            original = rng.choice(self.genuine)
            frame = bytearray(original)
            cut = rng.randrange(3)
            if cut == 0:
                while frame == original:  # two flips of one bit would undo each other
                    for _ in range(rng.randrange(1, 4)):
                        frame[rng.randrange(5, len(frame))] ^= 1 << rng.randrange(8)
            elif cut == 1:
                del frame[rng.randrange(6, len(frame)) :]
            else:
                frame += rng.randbytes(rng.randrange(1, 20))
            return bytes(frame)
        if kind == "foreign":
            if rng.random() < 0.5:
                old = {"t": "hb", "r": "old:1", "s": 0, "e": 1, "d": [1], "x": []}
                return msgpack.packb(old)
            body = body_of(rng.choice(self.deltas), self.signed)
            return wire.MAGIC + bytes((wire.VERSION + 1, 0)) + msgpack.packb(body)
        if kind == "reshaped":
            body = _reshape(body_of(rng.choice(self.deltas), self.signed), rng)
            return self.codec._frame(body)  # signed like the cluster's own frames
        if kind == "replayed":
            return rng.choice(self.genuine)
        raise ValueError(kind)

    def expected_reason(self, kind: str, frame: bytes) -> str | None:
        """The reason a replica gives for rejecting `frame` (None: it is accepted)."""
        if kind == "replayed":
            return None
        try:
            self.codec.decode(frame)
        except wire.Rejected as rejected:
            return rejected.reason
        raise AssertionError(f"a {kind} frame passed every check: {frame!r}")


def _kind(frame: bytes, signed: bool) -> str | None:
    try:
        return body_of(frame, signed).get("t")
    except Exception:
        return None


async def capture(url: str, channels: list[str], until: Awaitable[Any]) -> list[bytes]:
    """The frames published on `channels` while `until` (a coroutine) runs."""
    client = aioredis.Redis.from_url(url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(*channels)
    frames: list[bytes] = []

    async def listen() -> None:
        async for message in pubsub.listen():
            frames.append(message["data"])

    listener = asyncio.create_task(listen())
    await until
    await asyncio.sleep(0.1)
    listener.cancel()
    await pubsub.aclose()
    await client.aclose()
    return frames
