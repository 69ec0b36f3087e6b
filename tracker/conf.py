"""The tracker's options and their defaults: the one place they are documented.

Phoenix Tracker defaults to a 1.5 s broadcast period, which suits chat rosters; a live
staff dashboard wants a change on screen well inside a second, so ours is 0.2 s. A change
after a quiet period is not held back at all: it goes out at once, and only changes that
follow within one period are batched into the next heartbeat.

Options (seconds where it is a duration):
- broadcast_period = 0.2: at most one delta heartbeat per period and shard.
- max_silent_periods = 5: a quiet replica still sends an empty heartbeat every
  5 periods (1 s), so peers know it is alive.
- down_period = 5.0: a peer silent this long is down and its rows are hidden. Five
  missed heartbeats: a loaded event loop or a short Redis hiccup is not a death.
- permdown_period = 300: a peer silent this long is gone; its rows and clock are purged.
  Phoenix waits 20 min; ours is shorter because deploys replace replicas at once anyway
  (goodbye, or a new id with the same node name).
- clock_sample_periods = 2: every 2 periods, ask the peers we are behind for a transfer.
- max_delta_sizes = (100, 1000, 10000): the kept delta generations; a peer further
  behind than the largest gets the full state.
- pool_size = 1: shards per tracker, chosen by a stable hash of the topic.
- redis_url = None: the in-process transport (one node); else Redis pub/sub.
- channel_prefix = "tracker": the prefix of the Redis channels.
- node_name = hostname:pid: the stable part of the replica id; a new replica with the
  same node name replaces the old one at once.
- secret = None: a shared secret; with one, every frame is signed (keyed BLAKE2b) and
  frames not signed with the same secret are rejected, so nothing but the cluster's own
  replicas can change what it shows. The site sets its SECRET_KEY.

Constraints (checked, with a clear error): every period is positive;
down_period >= 2 x broadcast_period x max_silent_periods (a quiet but healthy peer must
never look dead); permdown_period > down_period; delta sizes positive and increasing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


class ConfigurationError(ValueError):
    """An invalid tracker option or combination of options."""


@dataclass(frozen=True)
class TrackerOptions:
    broadcast_period: float = 0.2
    max_silent_periods: int = 5
    down_period: float = 5.0
    permdown_period: float = 300.0
    clock_sample_periods: int = 2
    max_delta_sizes: tuple[int, ...] = (100, 1000, 10000)
    pool_size: int = 1
    redis_url: str | None = None
    channel_prefix: str = "tracker"
    node_name: str | None = None
    secret: str | bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_delta_sizes", tuple(self.max_delta_sizes))
        if not self.broadcast_period > 0:
            raise ConfigurationError("broadcast_period must be positive")
        for name in ("max_silent_periods", "clock_sample_periods", "pool_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(f"{name} must be a whole number >= 1, not {value!r}")
        heartbeat_gap = self.broadcast_period * self.max_silent_periods
        if self.down_period < 2 * heartbeat_gap:
            raise ConfigurationError(
                f"down_period ({self.down_period} s) must be at least twice the longest gap "
                f"between heartbeats, broadcast_period x max_silent_periods = {heartbeat_gap} s; "
                "otherwise a quiet, healthy peer would be marked down"
            )
        if self.permdown_period <= self.down_period:
            raise ConfigurationError(
                f"permdown_period ({self.permdown_period} s) must be longer than "
                f"down_period ({self.down_period} s)"
            )
        sizes = self.max_delta_sizes
        if not sizes or any(s < 1 for s in sizes) or list(sizes) != sorted(set(sizes)):
            raise ConfigurationError(
                f"max_delta_sizes must be positive and strictly increasing, not {sizes!r}"
            )
        if not self.channel_prefix or ":" in self.channel_prefix:
            raise ConfigurationError("channel_prefix must be non-empty and contain no ':'")

    @property
    def silent_heartbeat_interval(self) -> float:
        return self.broadcast_period * self.max_silent_periods

    @property
    def clock_sample_interval(self) -> float:
        return self.broadcast_period * self.clock_sample_periods

    @property
    def stall_timeout(self) -> float:
        """Silence on the Redis subscription after which its connection is presumed dead
        and replaced. A replica hears its own heartbeats at least every silent interval
        (plus a tick), so a few of those without a frame is a dead link; at most half the
        down period, so that the repair lands before peers would be taken for down."""
        beat = self.silent_heartbeat_interval + self.broadcast_period
        return max(beat + self.broadcast_period, min(2 * beat, self.down_period / 2))

    @property
    def command_timeout(self) -> float:
        """Seconds a Redis command (publish, subscribe, ping) may take before its
        connection counts as failed; also the longest wait between reconnection attempts.
        A quarter of the down period each, so that once a network heals, a dead
        connection is replaced well before peers would be taken for down."""
        return max(0.25, min(2.0, self.down_period / 4))

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> TrackerOptions:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigurationError(
                f"unknown tracker option(s): {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(known))}"
            )
        return cls(**values)
