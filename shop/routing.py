"""Shopper websocket routes (filled in by the storefront)."""

websocket_urlpatterns: list = []
