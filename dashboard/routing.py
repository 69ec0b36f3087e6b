"""Staff websocket routes (filled in by the dashboard)."""

websocket_urlpatterns: list = []
