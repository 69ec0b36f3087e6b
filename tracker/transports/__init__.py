"""How replicas reach each other: Redis pub/sub between processes and hosts, or an
in-process bus for the embedded single node and for simulations of many replicas."""

from .base import Outgoing, Transport, TransportUnavailable
from .local import LocalBus, LocalTransport

__all__ = ["LocalBus", "LocalTransport", "Outgoing", "Transport", "TransportUnavailable"]
