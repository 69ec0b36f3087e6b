"""The staff dashboard's metrics, served by /metrics (shop.observability) with the others.

Not in prometheus-client's global registry: the site's registry collects them.
"""

from prometheus_client import Counter, Gauge

OPEN_STAFF_SOCKETS = Gauge(
    "dashboard_open_staff_sockets", "Staff websockets open on this server process.", registry=None
)
STAFF_MESSAGES_SENT = Counter(
    "dashboard_staff_messages_sent",
    "Messages sent to staff sockets on this server process, by type (snapshot, diff, stock).",
    ["type"],
    registry=None,
)
for message_type in ("snapshot", "diff", "stock"):
    STAFF_MESSAGES_SENT.labels(message_type)  # every series exists from the start, at 0
