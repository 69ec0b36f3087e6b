"""The storefront's metrics, served by /metrics (shop.observability) with the others.

Not in prometheus-client's global registry: the site's registry collects them.
"""

from prometheus_client import Gauge

OPEN_SHOPPER_SOCKETS = Gauge(
    "shop_open_shopper_sockets", "Shopper websockets open on this server process.", registry=None
)
