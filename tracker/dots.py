"""Which of one replica's dots (its event counters 1, 2, 3, ...) a replica has seen.

A dot is seen when its row arrived or when its removal did; an ORSWOT never keeps
tombstones, so "seen and absent" is how a removal is remembered. The set is stored as a
contiguous prefix (the vector-clock entry) plus a "cloud" of the dots seen beyond it,
kept as sorted, disjoint, non-adjacent inclusive ranges so that a delta covering
thousands of dots costs one range, not thousands of integers.
"""

from __future__ import annotations

from bisect import bisect_right


class SeenDots:
    __slots__ = ("contiguous", "cloud")

    def __init__(self, contiguous: int = 0) -> None:
        self.contiguous = contiguous  # every dot 1..contiguous has been seen
        self.cloud: list[tuple[int, int]] = []  # seen ranges above contiguous + 1

    def __contains__(self, dot: int) -> bool:
        if dot <= self.contiguous:
            return True
        cloud = self.cloud
        if not cloud:
            return False
        i = bisect_right(cloud, (dot, float("inf"))) - 1
        return i >= 0 and cloud[i][0] <= dot <= cloud[i][1]

    @property
    def has_gaps(self) -> bool:
        return bool(self.cloud)

    def add_range(self, low: int, high: int) -> None:
        """Mark dots low..high (inclusive) as seen."""
        low = max(low, self.contiguous + 1)
        if low > high:
            return
        if low == self.contiguous + 1 and (not self.cloud or high + 1 < self.cloud[0][0]):
            self.contiguous = high  # the common case: in order, no gap
            return
        merged: list[tuple[int, int]] = []
        placed = False
        for lo, hi in self.cloud:
            if hi + 1 < low:
                merged.append((lo, hi))
            elif high + 1 < lo:
                if not placed:
                    merged.append((low, high))
                    placed = True
                merged.append((lo, hi))
            else:
                low, high = min(lo, low), max(hi, high)
        if not placed:
            merged.append((low, high))
            merged.sort()
        if merged[0][0] == self.contiguous + 1:
            self.contiguous = merged.pop(0)[1]
        self.cloud = merged

    def add(self, dot: int) -> None:
        self.add_range(dot, dot)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, SeenDots)
            and self.contiguous == other.contiguous
            and self.cloud == other.cloud
        )

    def __repr__(self) -> str:
        return f"SeenDots({self.contiguous}, cloud={self.cloud})"
