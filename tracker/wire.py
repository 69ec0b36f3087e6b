"""The tracker's frames between replicas: a small header, an optional signature and a
msgpack body. docs/protocol.md ("Tracker wire format") is the reference; in short:

    frame   = b"TRK" + version (1 byte) + flags (1 byte) + [tag (16 bytes)] + body
    flags   bit 0: signed; the tag is a keyed BLAKE2b of everything else in the frame

    heartbeat  {"t": "hb", "r": sender, "s": start, "e": end, "d": rows, "x": removed,
                "a": sender's age in seconds, "n": sender's shard count, "o"?: 1 if observer}
    transfer   {"t": "tx", ...the same fields}, sent to one replica
    request    {"t": "tq", "r": sender, "s": the owner's dots the sender has, up to}
    goodbye    {"t": "bye", "r": sender}: gone for good, purge my rows now
    superseded {"t": "sup", "r": sender}, sent to one replica of the sender's node name:
               "you started before me" (see tracker.shard, incarnations)

`rows` are grouped by topic, {topic: [[dot, conn, key, meta], ...]}, so that a topic name
travels once per message. `removed` lists dots at or below `start`.

`Codec.decode` checks a frame completely (header, version, signature, every field's type
and range) and returns a typed message, or raises `Rejected` with a reason: a bad frame
never reaches a replica's state half-read. Version 1 frames (a bare msgpack map, before
this header existed) are recognised so that their sender can be named in the refusal.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import sys
import threading
from dataclasses import dataclass
from typing import Any

import msgpack

from .deltas import Delta, Presence

VERSION = 2
MAGIC = b"TRK"
SIGNED = 0x01
TAG_SIZE = 16
_HEADER_SIZE = len(MAGIC) + 2

HEARTBEAT = "hb"
TRANSFER = "tx"
TRANSFER_REQUEST = "tq"
GOODBYE = "bye"
SUPERSEDED = "sup"

# Reasons a frame is rejected (the `reason` label of tracker_messages_rejected_total).
MALFORMED = "malformed"  # not a tracker frame at all: bad header, not msgpack, not a map
VERSION_MISMATCH = "version"  # another protocol version
SIGNATURE = "signature"  # unsigned, wrongly signed, or signed where we expect no secret
INVALID = "invalid"  # a tracker frame whose fields have the wrong type or range
INCOMPATIBLE = "incompatible"  # a valid heartbeat from a peer configured differently
REASONS = (MALFORMED, VERSION_MISMATCH, SIGNATURE, INVALID, INCOMPATIBLE)

_MAX_DOT = 2**63 - 1
_MAX_REPLICA_ID = 255


class InvalidMeta(TypeError):
    """A presence's meta is not a dict of msgpack-serialisable values."""


class Rejected(ValueError):
    """A frame that must not be applied. `peer` names its sender when it could be read."""

    def __init__(self, reason: str, detail: str, peer: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.peer = peer


@dataclass(frozen=True, slots=True)
class DeltaMessage:
    """A heartbeat or a transfer: the sender's delta (or full state) and who it is."""

    kind: str
    sender: str
    delta: Delta
    age: float  # seconds since the sender started, by its own clock, when it sent this
    shards: int
    observer: bool


@dataclass(frozen=True, slots=True)
class TransferRequest:
    sender: str
    since: int


@dataclass(frozen=True, slots=True)
class Goodbye:
    sender: str


@dataclass(frozen=True, slots=True)
class Superseded:
    sender: str  # a later start of the receiver's node name


Message = DeltaMessage | TransferRequest | Goodbye | Superseded


def normalize_meta(meta: Any, key: str | None = None) -> dict[str, Any]:
    """Check that `meta` can travel, and return the copy every replica will see.

    Round-tripping through msgpack detaches the stored meta from the caller's object and
    makes the local view identical to the remote one (tuples become lists, and so on).
    The copy shares its strings where it can (see `share_strings`).
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
    copy: dict[str, Any] = msgpack.unpackb(packed, strict_map_key=False)
    share_strings(copy, key)
    return copy


def share_strings(meta: dict[Any, Any], key: str | None) -> None:
    """Make a meta's top-level strings shared objects: one equal to the row's key becomes
    the key itself, and short ones (a page, a status, a user name repeat across thousands of
    rows) the interned copy. A fresh string costs ~50-90 B per row; a shared one nothing."""
    for name, value in meta.items():  # only values change: iterating stays valid
        if type(value) is str:
            if value == key:
                meta[name] = key
            elif len(value) <= _SHARE_UP_TO:
                meta[name] = sys.intern(value)


_SHARE_UP_TO = 64


# One Packer per thread for normalize_meta: `msgpack.packb` builds (and allocates the
# buffer of) a new Packer on every call, which costs more than the packing of a small
# meta. A Packer is not safe to share between threads.
_local = threading.local()
_KEEP_PACKER_BELOW = 64 * 1024


def signing_key(secret: str | bytes) -> bytes:
    """The frame-signing key derived from a shared secret (a site's SECRET_KEY, say), so
    that the secret itself is never used as a key for anything else."""
    raw = secret.encode() if isinstance(secret, str) else secret
    return hashlib.blake2b(raw, digest_size=32, person=b"tracker-frames").digest()


class Codec:
    """Encodes and decodes frames; with a secret, signs every frame and accepts only
    frames signed with the same secret."""

    def __init__(self, secret: str | bytes | None = None) -> None:
        self._key = signing_key(secret) if secret else None
        flags = SIGNED if self._key else 0
        self._header = MAGIC + bytes((VERSION, flags))

    # -- encoding ------------------------------------------------------------------------

    def _frame(self, message: dict[str, Any]) -> bytes:
        body: bytes = msgpack.packb(message)
        if self._key is None:
            return self._header + body
        tag = hashlib.blake2b(self._header + body, key=self._key, digest_size=TAG_SIZE)
        return self._header + tag.digest() + body

    def encode_delta(
        self, kind: str, delta: Delta, *, age: float, shards: int, observer: bool = False
    ) -> bytes:
        by_topic: dict[str, list[list[Any]]] = {}
        for dot, row in delta.rows.items():
            entries = by_topic.get(row.topic)
            if entries is None:
                entries = by_topic[row.topic] = []
            entries.append([dot, row.conn, row.key, row.meta])
        message: dict[str, Any] = {
            "t": kind,
            "r": delta.replica,
            "s": delta.start,
            "e": delta.end,
            "d": by_topic,
            "x": list(delta.removed),
            "a": age,
            "n": shards,
        }
        if observer:
            message["o"] = 1
        return self._frame(message)

    def encode_request(self, sender: str, since: int) -> bytes:
        return self._frame({"t": TRANSFER_REQUEST, "r": sender, "s": since})

    def encode_goodbye(self, sender: str) -> bytes:
        return self._frame({"t": GOODBYE, "r": sender})

    def encode_superseded(self, sender: str) -> bytes:
        return self._frame({"t": SUPERSEDED, "r": sender})

    # -- decoding ------------------------------------------------------------------------

    def decode(self, payload: bytes) -> Message:
        """The message in `payload`, checked in full; raises `Rejected`."""
        if not isinstance(payload, bytes | bytearray) or len(payload) < _HEADER_SIZE:
            raise Rejected(MALFORMED, "too short for a tracker frame")
        if payload[:3] != MAGIC:
            raise Rejected(*_unframed(payload))
        version, flags = payload[3], payload[4]
        if version != VERSION:
            raise Rejected(
                VERSION_MISMATCH, f"speaks tracker protocol {version}, we speak {VERSION}"
            )
        start = _HEADER_SIZE
        if flags & SIGNED:
            if self._key is None:
                raise Rejected(SIGNATURE, "signed frame, but this replica has no secret")
            start += TAG_SIZE
            tag = hashlib.blake2b(
                payload[:_HEADER_SIZE] + payload[start:], key=self._key, digest_size=TAG_SIZE
            ).digest()
            if not hmac.compare_digest(tag, payload[_HEADER_SIZE:start]):
                raise Rejected(SIGNATURE, "bad signature (another secret, or altered)")
        elif self._key is not None:
            raise Rejected(SIGNATURE, "unsigned frame, but this replica requires signatures")
        elif flags:
            raise Rejected(MALFORMED, f"unknown flags {flags:#x}")
        try:
            body = msgpack.unpackb(payload[start:], strict_map_key=False)
        except Exception as error:  # untrusted bytes: any failure of the unpacker
            raise Rejected(MALFORMED, f"body is not msgpack: {type(error).__name__}") from None
        return _message(body)


def _unframed(payload: bytes) -> tuple[str, str, str | None]:
    """Why a frame without our header is refused: a version 1 message names its sender."""
    try:
        body = msgpack.unpackb(payload, strict_map_key=False)
    except Exception:
        return MALFORMED, "not a tracker frame", None
    if isinstance(body, dict) and isinstance(body.get("r"), str) and "t" in body:
        peer = body["r"][:_MAX_REPLICA_ID]
        return VERSION_MISMATCH, f"speaks tracker protocol 1, we speak {VERSION}", peer
    return MALFORMED, "not a tracker frame", None


def _message(body: Any) -> Message:
    if type(body) is not dict:
        raise Rejected(MALFORMED, "body is not a map")
    sender = body.get("r")
    if type(sender) is not str or not 0 < len(sender) <= _MAX_REPLICA_ID or ":" not in sender:
        raise Rejected(INVALID, "no valid sender")
    kind = body.get("t")
    if kind == HEARTBEAT or kind == TRANSFER:
        return _delta_message(kind, sender, body)
    if kind == TRANSFER_REQUEST:
        since = body.get("s")
        if type(since) is not int or not 0 <= since <= _MAX_DOT:
            raise Rejected(INVALID, "transfer request without a valid dot", sender)
        return TransferRequest(sender, since)
    if kind == GOODBYE:
        return Goodbye(sender)
    if kind == SUPERSEDED:
        return Superseded(sender)
    raise Rejected(INVALID, f"unknown message type {str(kind)[:20]!r}", sender)


def _delta_message(kind: str, sender: str, body: dict[Any, Any]) -> DeltaMessage:
    def invalid(what: str) -> Rejected:
        return Rejected(INVALID, f"{kind} with {what}", sender)

    start, end, topics, removed = body.get("s"), body.get("e"), body.get("d"), body.get("x")
    if type(start) is not int or type(end) is not int or not 0 <= start <= end <= _MAX_DOT:
        raise invalid("an invalid dot range")
    age, shards, observer = body.get("a"), body.get("n"), body.get("o", 0)
    if not isinstance(age, int | float) or isinstance(age, bool) or not 0 <= age < math.inf:
        raise invalid("an invalid age")
    if type(shards) is not int or not 0 < shards <= 1024:
        raise invalid("an invalid shard count")
    if observer not in (0, 1) or type(observer) not in (int, bool):
        raise invalid("an invalid observer flag")
    if type(topics) is not dict or type(removed) is not list:
        raise invalid("rows or removals of the wrong type")
    owner = sys.intern(sender)
    rows: dict[int, Presence] = {}
    for topic, entries in topics.items():
        if type(topic) is not str or type(entries) is not list:
            raise invalid("a topic of the wrong type")
        topic = sys.intern(topic)
        for entry in entries:
            if type(entry) is not list or len(entry) != 4:
                raise invalid("a row of the wrong shape")
            dot, conn, key, meta = entry
            if type(dot) is not int or not start < dot <= end or dot in rows:
                raise invalid("a row dot outside its range, or twice")
            if type(conn) is not str or type(key) is not str or type(meta) is not dict:
                raise invalid("a row field of the wrong type")
            share_strings(meta, key)
            rows[dot] = Presence(topic, conn, key, meta, owner, dot)
    gone: set[int] = set()
    for dot in removed:
        if type(dot) is not int or not 0 < dot <= start:
            raise invalid("a removed dot outside its range")
        gone.add(dot)
    return DeltaMessage(
        kind, owner, Delta(owner, start, end, rows, gone), float(age), shards, bool(observer)
    )
