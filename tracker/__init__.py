"""A distributed presence tracker: Phoenix Tracker's ideas in Python.

Public API: `Tracker` (see tracker.tracker), the `Presence` rows it reports in diffs,
its errors, and `LocalBus` for in-process clusters. Nothing here knows about the site.
"""

from .conf import ConfigurationError, TrackerOptions
from .deltas import Presence
from .state import AlreadyTracked, NotTracked
from .tracker import Tracker
from .transports import LocalBus, TransportUnavailable
from .wire import InvalidMeta

__all__ = [
    "AlreadyTracked",
    "ConfigurationError",
    "InvalidMeta",
    "LocalBus",
    "NotTracked",
    "Presence",
    "Tracker",
    "TrackerOptions",
    "TransportUnavailable",
]
