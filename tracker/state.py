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
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .deltas import Delta, DeltaGenerations, Presence
from .dots import SeenDots

UP = "up"
DOWN = "down"

Changes = tuple[list[Presence], list[Presence]]  # (joins, leaves)


class AlreadyTracked(ValueError):
    """The connection is already tracked on that topic under that key."""


class NotTracked(LookupError):
    """The connection is not tracked on that topic under that key."""


class State:
    def __init__(self, replica: str, max_delta_sizes: Iterable[int] = (100, 1000, 10000)) -> None:
        self.replica = replica
        self.seen: dict[str, SeenDots] = {replica: SeenDots()}
        self.peer_clocks: dict[str, int] = {}  # the highest dot each peer has announced
        self.replicas: dict[str, str] = {}  # peer -> UP / DOWN (never self)
        # Indexes. `owned` holds every stored row (visible or hidden) by owner and dot;
        # `topics` only the visible ones; `conns` only our own, for leave and leave-all:
        # per conn its one row itself, or {(topic, key): row} once it has had several
        # (most connections hold one row; a dict and a tuple per row would cost ~280 B).
        self.owned: dict[str, dict[int, Presence]] = {replica: {}}
        self.topics: dict[str, dict[str, dict[Presence, None]]] = {}
        self.conns: dict[str, Presence | dict[tuple[str, str], Presence]] = {}
        self._delta = Delta(replica, 0, 0)
        self.generations = DeltaGenerations(max_delta_sizes)

    # -- reads ---------------------------------------------------------------------------

    @property
    def clock(self) -> int:
        """Our own counter: the last dot we created."""
        return self.seen[self.replica].contiguous

    def context(self) -> dict[str, int]:
        """The vector clock: per owner, the highest dot below which we have seen every dot."""
        return {owner: dots.contiguous for owner, dots in self.seen.items()}

    def list(self, topic: str) -> list[tuple[str, dict[str, Any]]]:
        keys = self.topics.get(topic)
        if not keys:
            return []
        return [(key, row.meta) for key, rows in keys.items() for row in rows]

    def get_by_key(self, topic: str, key: str) -> list[tuple[str, dict[str, Any]]]:
        rows = self.topics.get(topic, {}).get(key, ())
        return [(row.conn, row.meta) for row in rows]

    def rows(self, topic: str) -> list[Presence]:
        return [row for rows in self.topics.get(topic, {}).values() for row in rows]

    def visible(self) -> set[tuple[str, int]]:
        """Every visible row as its dot: what convergence is judged on."""
        return {
            (row.replica, row.clock)
            for keys in self.topics.values()
            for rows in keys.values()
            for row in rows
        }

    def behind(self, peer: str) -> bool:
        """True when we lack some of the peer's dots that it has announced."""
        dots = self.seen.get(peer)
        announced = self.peer_clocks.get(peer, 0)
        if dots is None:
            return announced > 0
        return dots.has_gaps or dots.contiguous < announced

    # -- local operations (we are the owner) ---------------------------------------------

    def _own_row(self, conn: str, topic: str, key: str) -> Presence | None:
        held = self.conns.get(conn)
        if held is None:
            return None
        if type(held) is dict:
            return held.get((topic, key))
        return held if held.topic == topic and held.key == key else None

    def join(self, conn: str, topic: str, key: str, meta: dict[str, Any]) -> Presence:
        if conn in self.conns and self._own_row(conn, topic, key) is not None:
            raise AlreadyTracked(f"{conn!r} is already tracked on {topic!r} as {key!r}")
        return self._add_local(conn, topic, key, meta)

    def leave(self, conn: str, topic: str, key: str) -> Presence:
        row = self._own_row(conn, topic, key)
        if row is None:
            raise NotTracked(f"{conn!r} is not tracked on {topic!r} as {key!r}")
        self._remove_local(row)
        return row

    def leave_conn(self, conn: str) -> list[Presence]:
        held = self.conns.get(conn)
        if held is None:
            return []
        rows = list(held.values()) if type(held) is dict else [held]
        for row in rows:
            self._remove_local(row)
        return rows

    def update(self, conn: str, topic: str, key: str, meta: dict[str, Any]) -> Changes:
        """Replace a row's meta: the old dot is removed and a new one added, in one step."""
        old = self.leave(conn, topic, key)
        new = self._add_local(conn, topic, key, meta)
        return [new], [old]

    def _add_local(self, conn: str, topic: str, key: str, meta: dict[str, Any]) -> Presence:
        dots = self.seen[self.replica]
        dots.contiguous += 1
        row = Presence(topic, conn, key, meta, self.replica, dots.contiguous)
        self.owned[self.replica][row.clock] = row
        self._show(row)
        conns = self.conns
        held = conns.get(conn)
        if held is None:
            conns[conn] = row
        elif type(held) is dict:
            held[(topic, key)] = row
        else:
            conns[conn] = {(held.topic, held.key): held, (topic, key): row}
        self._delta.rows[row.clock] = row
        self._delta.end = row.clock
        return row

    def _remove_local(self, row: Presence) -> None:
        dots = self.seen[self.replica]
        dots.contiguous += 1  # the leave's own dot: peers learn they missed nothing
        del self.owned[self.replica][row.clock]
        self._hide(row)
        conns = self.conns
        held = conns[row.conn]
        if held is row:
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

    def take_delta(self) -> Delta:
        """Our changes since the last take (possibly empty), remembered in the generations."""
        delta = self._delta
        self._delta = Delta(self.replica, delta.end, delta.end)
        self.generations.push(delta)
        return delta

    def extract(self, since: int) -> Delta:
        """What a peer that has seen our dots up to `since` needs: a delta if one of the
        generations reaches back that far, else our full state. Changes not yet taken
        are included, so the answer is current."""
        base = self.generations.covering(since)
        if base is None or since > self.clock:
            return Delta(self.replica, 0, self.clock, dict(self.owned[self.replica]))
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
        if owner == self.replica:
            raise ValueError("a replica never merges its own rows")
        came_back = self.replicas.get(owner) == DOWN
        self.replicas[owner] = UP
        dots = self.seen.setdefault(owner, SeenDots())
        held = self.owned.setdefault(owner, {})
        joins: list[Presence] = []
        leaves: list[Presence] = []

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
        if end > self.peer_clocks.get(owner, 0):
            self.peer_clocks[owner] = end
        return joins, leaves

    def _version_of(self, row: Presence) -> Presence | None:
        """The visible row of the same owner, topic, conn and key as `row`, if any."""
        for other in self.topics.get(row.topic, {}).get(row.key, ()):
            if other.conn == row.conn and other.replica == row.replica:
                return other
        return None

    # -- replica status ------------------------------------------------------------------

    def replica_up(self, peer: str) -> list[Presence]:
        """Mark a peer up (new, or back after a netsplit); its hidden rows reappear."""
        status = self.replicas.get(peer)
        self.replicas[peer] = UP
        if status != DOWN:
            return []
        rows = list(self.owned.get(peer, {}).values())
        for row in rows:
            self._show(row)
        return rows

    def replica_down(self, peer: str) -> list[Presence]:
        """Hide a silent peer's rows, keeping them in case it comes back."""
        if self.replicas.get(peer) != UP:
            return []
        self.replicas[peer] = DOWN
        rows = list(self.owned.get(peer, {}).values())
        for row in rows:
            self._hide(row)
        return rows

    def replica_permdown(self, peer: str) -> list[Presence]:
        """Forget a peer that is gone for good: its rows and its clock are purged."""
        status = self.replicas.pop(peer, None)
        rows = list(self.owned.pop(peer, {}).values())
        self.seen.pop(peer, None)
        self.peer_clocks.pop(peer, None)
        if status != UP:
            return []
        for row in rows:
            self._hide(row)
        return rows

    # -- indexes -------------------------------------------------------------------------

    def _show(self, row: Presence) -> None:
        keys = self.topics.get(row.topic)
        if keys is None:
            keys = self.topics[row.topic] = {}
        rows = keys.get(row.key)
        if rows is None:
            keys[row.key] = {row: None}
        else:
            rows[row] = None

    def _hide(self, row: Presence) -> None:
        keys = self.topics[row.topic]
        rows = keys[row.key]
        del rows[row]
        if not rows:
            del keys[row.key]
            if not keys:
                del self.topics[row.topic]
