"""The tracker's functional core: a delta-state ORSWOT of presences. No I/O, no asyncio.

One `State` is one replica's view of the cluster. Rows are keyed by dots
(owner replica, counter); only the owner creates dots for its rows, so each owner's rows
form a single-writer sub-state and the whole is their product. A replica's knowledge of
an owner is the set of that owner's dots it has seen (`SeenDots`: the vector-clock entry
plus a cloud beyond it). Merging a delta adds the rows whose dots were not seen yet and
removes the held rows whose dots the delta has seen but does not carry; merge is
therefore idempotent, commutative and associative, and replicas that have seen the same
deltas hold the same rows whatever the order, duplication or loss on the way (a loss
leaves a gap that a transfer fills).

Rows of a replica marked down stay stored but hidden (so they come back if it does);
permdown purges them. Every operation returns the visible changes it caused.

Each replica serves only its own rows: `extract` answers with the rows this replica owns,
never with rows it merged from others (no relaying), so a stale copy can never overwrite
newer data of their owner. The price is that a replica sees another's rows only over a
direct link to it: in a partial mesh (A hears B and B hears C, but A does not hear C), A
never sees C's rows and takes C for down, whatever B knows. Redis pub/sub is a full mesh as
long as every replica reaches the one Redis; docs/architecture.md says more.

Invariant: at most one visible row per owner, topic, conn and key. The owner keeps one
version of a row at a time, so when a row arrives whose older version we still hold (its
removal was in a delta we missed), the newer dot wins.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from typing import Any

from .deltas import Delta, DeltaGenerations, Listing, Presence, Rows
from .dots import SeenDots

UP = "up"
DOWN = "down"

Changes = tuple[list[Presence], list[Presence]]  # (joins, leaves)


class AlreadyTracked(ValueError):
    """The connection is already tracked on that topic under that key."""


class NotTracked(LookupError):
    """The connection is not tracked on that topic under that key."""


class State:
    """One replica's view: its own rows, the rows merged from its peers, what it has seen
    of each owner's dots, and each peer's status. Read it through its methods; the
    fields are private (the indexes must stay consistent with one another)."""

    def __init__(self, replica: str, max_delta_sizes: Iterable[int] = (100, 1000, 10000)) -> None:
        self._replica = replica
        self._seen: dict[str, SeenDots] = {replica: SeenDots()}
        self._peer_clocks: dict[str, int] = {}  # the highest dot each peer has announced
        self._replicas: dict[str, str] = {}  # peer -> UP / DOWN (never self)
        # Indexes. `owned` holds every stored row (visible or hidden) by owner and dot;
        # `topics` only the visible ones, per key the one row itself or, once a key has
        # several, {row: None}; `conns` only our own, for leave and leave-all, per conn its
        # one row itself or {(topic, key): row} once it has had several. Most keys and
        # connections hold one row, and a dict per row would cost ~230 B of ~900.
        self._owned: dict[str, dict[int, Presence]] = {replica: {}}
        self._topics: dict[str, dict[str, Presence | dict[Presence, None]]] = {}
        self._conns: dict[str, Presence | dict[tuple[str, str], Presence]] = {}
        self._delta = Delta(replica, 0, 0)
        self._generations = DeltaGenerations(max_delta_sizes)

    # -- reads ---------------------------------------------------------------------------

    @property
    def replica(self) -> str:
        return self._replica

    @property
    def clock(self) -> int:
        """Our own counter: the last dot we created."""
        return self._seen[self._replica].contiguous

    def context(self) -> dict[str, int]:
        """The vector clock: per owner, the highest dot below which we have seen every dot."""
        return {owner: dots.contiguous for owner, dots in self._seen.items()}

    def knowledge(self) -> dict[str, tuple[int, tuple[tuple[int, int], ...]]]:
        """Every dot seen, per owner: (contiguous prefix, the ranges seen beyond it)."""
        return {owner: (d.contiguous, tuple(d.cloud)) for owner, d in self._seen.items()}

    def list(self, topic: str) -> Listing:
        listing: Listing = []
        append = listing.append
        # (A loop with a branch: a nested comprehension building a tuple per key took twice
        # as long, for the rare key with several rows.)
        for key, held in self._topics.get(topic, {}).items():
            if isinstance(held, dict):
                listing.extend([(key, row.meta) for row in held])
            else:
                append((key, held.meta))
        return listing

    def get_by_key(self, topic: str, key: str) -> Listing:
        return [(row.conn, row.meta) for row in self._key_rows(topic, key)]

    def rows(self, topic: str) -> Rows:
        """The visible rows of `topic`."""
        rows: list[Presence] = []
        append = rows.append
        for held in self._topics.get(topic, {}).values():
            if isinstance(held, dict):
                rows.extend(held)
            else:
                append(held)
        return rows

    def by_key(self, topic: str) -> dict[str, Rows]:
        """The visible rows of `topic`, grouped by key."""
        return {
            key: list(held) if isinstance(held, dict) else [held]
            for key, held in self._topics.get(topic, {}).items()
        }

    def count(self, topic: str) -> int:
        """How many rows of `topic` are visible."""
        return sum(
            len(held) if isinstance(held, dict) else 1
            for held in self._topics.get(topic, {}).values()
        )

    def topics(self) -> builtins.list[str]:
        """The topics with visible rows."""
        return list(self._topics)

    def visible(self) -> set[tuple[str, int]]:
        """Every visible row as its dot: what convergence is judged on."""
        return {(row.replica, row.clock) for topic in self._topics for row in self.rows(topic)}

    def held(self, owner: str) -> int:
        """How many rows of `owner` are stored (hidden ones included)."""
        return len(self._owned.get(owner, ()))

    def replicas(self) -> dict[str, str]:
        """Every peer known, and its status (UP or DOWN)."""
        return dict(self._replicas)

    def status_of(self, peer: str) -> str | None:
        """UP, DOWN, or None for a peer we do not know."""
        return self._replicas.get(peer)

    def seen_up_to(self, peer: str) -> int:
        """The peer's dots we have all seen, 1 to this."""
        dots = self._seen.get(peer)
        return 0 if dots is None else dots.contiguous

    def announced(self, peer: str) -> int:
        """The highest dot the peer has announced to us."""
        return self._peer_clocks.get(peer, 0)

    def behind(self, peer: str) -> bool:
        """True when we lack some of the peer's dots that it has announced."""
        dots = self._seen.get(peer)
        announced = self._peer_clocks.get(peer, 0)
        if dots is None:
            return announced > 0
        return dots.has_gaps or dots.contiguous < announced

    def _key_rows(self, topic: str, key: str) -> Iterable[Presence]:
        held = self._topics.get(topic, {}).get(key)
        if held is None:
            return ()
        return held if isinstance(held, dict) else (held,)

    # -- local operations (we are the owner) ---------------------------------------------

    def _own_row(self, conn: str, topic: str, key: str) -> Presence | None:
        held = self._conns.get(conn)
        if held is None:
            return None
        if isinstance(held, dict):
            return held.get((topic, key))
        return held if held.topic == topic and held.key == key else None

    def join(self, conn: str, topic: str, key: str, meta: dict[str, Any]) -> Presence:
        if conn in self._conns and self._own_row(conn, topic, key) is not None:
            raise AlreadyTracked(f"{conn!r} is already tracked on {topic!r} as {key!r}")
        return self._add_local(conn, topic, key, meta)

    def leave(self, conn: str, topic: str, key: str) -> Presence:
        row = self._own_row(conn, topic, key)
        if row is None:
            raise NotTracked(f"{conn!r} is not tracked on {topic!r} as {key!r}")
        self._remove_local(row)
        return row

    def leave_conn(self, conn: str) -> Rows:
        held = self._conns.get(conn)
        if held is None:
            return []
        rows = list(held.values()) if isinstance(held, dict) else [held]
        for row in rows:
            self._remove_local(row)
        return rows

    def update(self, conn: str, topic: str, key: str, meta: dict[str, Any]) -> Changes:
        """Replace a row's meta: the old dot is removed and a new one added, in one step."""
        old = self.leave(conn, topic, key)
        new = self._add_local(conn, topic, key, meta)
        return [new], [old]

    def _add_local(self, conn: str, topic: str, key: str, meta: dict[str, Any]) -> Presence:
        dots = self._seen[self._replica]
        dots.contiguous += 1
        row = Presence(topic, conn, key, meta, self._replica, dots.contiguous)
        self._owned[self._replica][row.clock] = row
        self._show(row)
        conns = self._conns
        held = conns.get(conn)
        if held is None:
            conns[conn] = row
        elif isinstance(held, dict):
            held[(topic, key)] = row
        else:
            conns[conn] = {(held.topic, held.key): held, (topic, key): row}
        self._delta.rows[row.clock] = row
        self._delta.end = row.clock
        return row

    def _remove_local(self, row: Presence) -> None:
        dots = self._seen[self._replica]
        dots.contiguous += 1  # the leave's own dot: peers learn they missed nothing
        del self._owned[self._replica][row.clock]
        self._hide(row)
        conns = self._conns
        held = conns[row.conn]
        if not isinstance(held, dict):  # its one row: this one
            del conns[row.conn]
        else:
            del held[(row.topic, row.key)]
            if not held:
                del conns[row.conn]
        delta = self._delta
        if delta.rows.pop(row.clock, None) is None:
            delta.removed.add(row.clock)
        delta.end = dots.contiguous

    # -- deltas --------------------------------------------------------------------------

    @property
    def has_pending_delta(self) -> bool:
        return self._delta.end > self._delta.start

    def delta_covers(self, since: int) -> bool:
        """Whether `extract(since)` can answer with a delta rather than the full state."""
        return self._generations.covering(since) is not None

    def take_delta(self) -> Delta:
        """Our changes since the last take (possibly empty), remembered in the generations."""
        delta = self._delta
        self._delta = Delta(self._replica, delta.end, delta.end)
        self._generations.push(delta)
        return delta

    def extract(self, since: int) -> Delta:
        """What a peer that has seen our dots up to `since` needs: a delta if one of the
        generations reaches back that far, else our full state. Changes not yet taken
        are included, so the answer is current."""
        base = self._generations.covering(since)
        if base is None or since > self.clock:
            return Delta(self._replica, 0, self.clock, dict(self._owned[self._replica]))
        answer = base.copy()
        answer.extend(self._delta)
        return answer

    def merge(self, delta: Delta) -> Changes:
        """Join a peer's delta (or full state) into ours; returns the visible changes.

        Hearing from a peer is what brings it up: if it was down, its hidden rows that the
        delta leaves alive come back into view in the same change (and the ones it removed
        stay out of view: they were reported gone when it went down).
        """
        owner = delta.replica
        if owner == self._replica:
            raise ValueError("a replica never merges its own rows")
        came_back = self._replicas.get(owner) == DOWN
        self._replicas[owner] = UP
        dots = self._seen.setdefault(owner, SeenDots())
        held = self._owned.setdefault(owner, {})
        joins: Rows = []
        leaves: Rows = []

        # Held rows whose dots the delta has seen but does not carry were removed.
        start, end, incoming = delta.start, delta.end, delta.rows
        if end - start + len(delta.removed) <= len(held):
            candidates: Iterable[int] = [*delta.removed, *range(start + 1, end + 1)]
        else:
            candidates = list(held)
        removed = delta.removed
        for dot in candidates:
            row = held.get(dot)
            if row is not None and dot not in incoming and (start < dot <= end or dot in removed):
                del held[dot]
                if not came_back:
                    self._hide(row)
                    leaves.append(row)
        if came_back:
            joins.extend(held.values())
            for row in joins:
                self._show(row)

        # New unless seen: at or below the contiguous prefix, or in the cloud (if any).
        # With every earlier dot seen, the delta carries every removal of a row we hold;
        # after a gap, a row we hold may be an older version of one that arrives (its
        # removal was in what we missed): the owner tracks one version at a time, so the
        # newer dot wins (at most one visible row per owner, topic, conn and key).
        seen_up_to, gaps, show = dots.contiguous, bool(dots.cloud), self._show
        after_gap = gaps or start > seen_up_to
        for dot, row in incoming.items():
            if dot > seen_up_to and (not gaps or dot not in dots):
                if after_gap:
                    other = self._version_of(row)
                    if other is not None:
                        if other.clock > dot:
                            continue  # a late older version: its removal is implied
                        del held[other.clock]
                        self._hide(other)
                        if came_back and other in joins:
                            joins.remove(other)
                        else:
                            leaves.append(other)
                held[dot] = row
                show(row)
                joins.append(row)

        dots.add_range(start + 1, end)
        for dot in removed:
            dots.add(dot)
        if end > self._peer_clocks.get(owner, 0):
            self._peer_clocks[owner] = end
        return joins, leaves

    def _version_of(self, row: Presence) -> Presence | None:
        """The visible row of the same owner, topic, conn and key as `row`, if any."""
        for other in self._key_rows(row.topic, row.key):
            if other.conn == row.conn and other.replica == row.replica:
                return other
        return None

    # -- replica status ------------------------------------------------------------------

    def replica_down(self, peer: str) -> Rows:
        """Hide a silent peer's rows, keeping them in case it comes back."""
        if self._replicas.get(peer) != UP:
            return []
        self._replicas[peer] = DOWN
        rows = list(self._owned.get(peer, {}).values())
        for row in rows:
            self._hide(row)
        return rows

    def replica_permdown(self, peer: str) -> Rows:
        """Forget a peer that is gone for good: its rows and its clock are purged."""
        status = self._replicas.pop(peer, None)
        rows = list(self._owned.pop(peer, {}).values())
        self._seen.pop(peer, None)
        self._peer_clocks.pop(peer, None)
        if status != UP:
            return []
        for row in rows:
            self._hide(row)
        return rows

    # -- indexes -------------------------------------------------------------------------

    def _show(self, row: Presence) -> None:
        keys = self._topics.get(row.topic)
        if keys is None:
            keys = self._topics[row.topic] = {}
        held = keys.get(row.key)
        if held is None:
            keys[row.key] = row
        elif isinstance(held, dict):
            held[row] = None
        else:
            keys[row.key] = {held: None, row: None}

    def _hide(self, row: Presence) -> None:
        keys = self._topics[row.topic]
        held = keys[row.key]
        if not isinstance(held, dict):  # its one row: this one
            del keys[row.key]
            if not keys:
                del self._topics[row.topic]
            return
        del held[row]
        if len(held) == 1:
            keys[row.key] = next(iter(held))  # back to the lean form
