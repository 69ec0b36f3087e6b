"""The tracker's messages between replicas, as msgpack.

  heartbeat  {"t": "hb", "r": sender, "s": start, "e": end, "d": rows, "x": removed,
              "o": observer flag, "st": the sender's start time (which of two replicas
              with one node name is the newer)}
  transfer   {"t": "tx", ...same fields as a heartbeat}, sent to one replica
  request    {"t": "tq", "r": sender, "s": dots of the owner the sender has up to}
  goodbye    {"t": "bye", "r": sender}: gone for good, purge my rows now

rows are grouped by topic, {topic: [[dot, conn, key, meta], ...]}, so that a topic name
travels once per message.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import msgpack

from .deltas import Delta, Presence

HEARTBEAT = "hb"
TRANSFER = "tx"
TRANSFER_REQUEST = "tq"
GOODBYE = "bye"


class InvalidMeta(TypeError):
    """A presence's meta is not a dict of msgpack-serialisable values."""


def normalize_meta(meta: Any) -> dict[str, Any]:
    """Check that `meta` can travel, and return the copy every replica will see.

    Round-tripping through msgpack detaches the stored meta from the caller's object and
    makes the local view identical to the remote one (tuples become lists, and so on).
    """
    if not isinstance(meta, dict):
        raise InvalidMeta(f"meta must be a dict, not {type(meta).__name__}")
    try:
        pack = _local.pack
    except AttributeError:
        pack = _local.pack = msgpack.Packer().pack
    try:
        packed = pack(meta)  # the Packer empties its buffer after each call, even on error
    except (TypeError, ValueError, OverflowError) as error:
        raise InvalidMeta(f"meta cannot be serialised: {error}") from None
    if len(packed) > _KEEP_PACKER_BELOW:
        del _local.pack  # do not keep a buffer grown by an unusually large meta
    return msgpack.unpackb(packed, strict_map_key=False)


# One Packer per thread for normalize_meta: `msgpack.packb` builds (and allocates the
# buffer of) a new Packer on every call, which costs more than the packing of a small
# meta. A Packer is not safe to share between threads.
_local = threading.local()
_KEEP_PACKER_BELOW = 64 * 1024


def encode_delta(
    kind: str, delta: Delta, *, observer: bool = False, started: float | None = None
) -> bytes:
    by_topic: dict[str, list[list[Any]]] = {}
    for dot, row in delta.rows.items():
        entries = by_topic.get(row.topic)
        if entries is None:
            entries = by_topic[row.topic] = []
        entries.append([dot, row.conn, row.key, row.meta])
    message = {
        "t": kind,
        "r": delta.replica,
        "s": delta.start,
        "e": delta.end,
        "d": by_topic,
        "x": list(delta.removed),
    }
    if observer:
        message["o"] = 1
    if started is not None:
        message["st"] = started
    return msgpack.packb(message)


def decode(payload: bytes) -> dict[str, Any]:
    message = msgpack.unpackb(payload, strict_map_key=False)
    if not isinstance(message, dict) or "t" not in message or "r" not in message:
        raise ValueError("not a tracker message")
    return message


def delta_of(message: dict[str, Any]) -> Delta:
    owner = sys.intern(message["r"])
    rows: dict[int, Presence] = {}
    for topic, entries in message["d"].items():
        topic = sys.intern(topic)
        for dot, conn, key, meta in entries:
            rows[dot] = Presence(topic, conn, key, meta, owner, dot)
    return Delta(owner, message["s"], message["e"], rows, set(message["x"]))


def encode_request(sender: str, since: int) -> bytes:
    return msgpack.packb({"t": TRANSFER_REQUEST, "r": sender, "s": since})


def encode_goodbye(sender: str) -> bytes:
    return msgpack.packb({"t": GOODBYE, "r": sender})
