"""Presences, deltas and delta generations: the values that `State` keeps and exchanges.

Every row belongs to the replica that tracked it, and only that owner creates dots for it,
so a delta always describes one owner: the dots (start, end] it covers, the rows created
in that range that are still alive, and the older dots removed within it. A dot in the
range that carries no row was removed (or was a leave's own dot); ORSWOT needs no
tombstones for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


class Presence:
    """One tracked row: a connection present on a topic under a key, with its metadata.

    Instances are shared between the state, diffs and callers: treat them, and their
    `meta`, as read-only. Identity (not equality) distinguishes rows.
    """

    __slots__ = ("topic", "conn", "key", "meta", "replica", "clock")

    def __init__(
        self, topic: str, conn: str, key: str, meta: dict[str, Any], replica: str, clock: int
    ) -> None:
        self.topic = topic
        self.conn = conn
        self.key = key
        self.meta = meta
        self.replica = replica  # the owner, the only replica that creates or removes it
        self.clock = clock  # the owner's dot that created it

    @property
    def ref(self) -> str:
        """A cluster-wide unique name of this row (a new one on every update). Each shard
        counts its own dots, and a topic lives on one shard, so the topic is part of it."""
        return f"{self.replica}/{self.topic}/{self.clock}"

    def __repr__(self) -> str:
        return f"Presence({self.topic!r}, {self.conn!r}, {self.key!r}, {self.meta!r}, {self.ref})"


@dataclass
class Delta:
    """What changed in `replica`'s own rows over its dots (start, end].

    A full state is the delta (0, end] with every live row.
    """

    replica: str
    start: int
    end: int
    rows: dict[int, Presence] = field(default_factory=dict)  # dot -> row created in range
    removed: set[int] = field(default_factory=set)  # dots <= start removed in range

    @property
    def size(self) -> int:
        return len(self.rows) + len(self.removed)

    def copy(self) -> Delta:
        return Delta(self.replica, self.start, self.end, dict(self.rows), set(self.removed))

    def extend(self, later: Delta) -> None:
        """Absorb `later`, the delta that follows this one (later.start == self.end)."""
        if later.replica != self.replica or later.start != self.end:
            raise ValueError(f"cannot join delta {later.start}..{later.end} after ..{self.end}")
        rows = self.rows
        for dot in later.removed:
            if rows.pop(dot, None) is None and dot <= self.start:
                self.removed.add(dot)
        rows.update(later.rows)
        self.end = later.end


class DeltaGenerations:
    """Accumulated recent deltas of growing size (Phoenix's `max_delta_sizes`).

    Generation i is the longest run of recent deltas whose joined size is at most
    sizes[i]. A peer that missed a few heartbeats is answered with the smallest generation
    that reaches back to what it has, and only a peer too far behind gets the full state.
    """

    def __init__(self, sizes: Iterable[int]) -> None:
        self.sizes = tuple(sizes)
        self.generations: list[Delta | None] = [None] * len(self.sizes)

    def push(self, delta: Delta) -> None:
        for i, limit in enumerate(self.sizes):
            if delta.size > limit:  # whatever this generation held, joined it would be too big
                self.generations[i] = None
                continue
            generation = self.generations[i]
            if generation is not None and generation.end == delta.start:
                generation.extend(delta)
                if generation.size <= limit:
                    continue
            self.generations[i] = delta.copy()

    def covering(self, since: int) -> Delta | None:
        """The smallest generation holding everything after dot `since`, if any."""
        for generation in self.generations:
            if generation is not None and generation.start <= since:
                return generation
        return None


# What the readers return. Named here because classes with a `list` method (State, Shard,
# Tracker) cannot spell the builtin in their own annotations.
Listing = list[tuple[str, dict[str, Any]]]  # (key, meta) or (conn, meta) per presence
Rows = list[Presence]
Grouped = dict[str, dict[str, list[dict[str, Any]]]]  # Phoenix Presence's shape, by key
