"""The storefront's metrics, served by /metrics (shop.observability) with the others.

Not in prometheus-client's global registry: the site's registry collects them.
"""

from prometheus_client import Counter, Gauge

OPEN_SHOPPER_SOCKETS = Gauge(
    "shop_open_shopper_sockets", "Shopper websockets open on this server process.", registry=None
)
FANOUT_FRAMES = Counter(
    "shop_fanout_frames",
    "Frames the node-local fan-out wrote to this process's sockets (shop.fanout), by path: "
    "direct (the frame written straight to a daphne socket) or asgi (through the ASGI send).",
    ["path"],
    registry=None,
)
