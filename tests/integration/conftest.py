"""Storefront and dashboard together, through the project's ASGI application and this
event loop's real process tracker (in-process transport)."""

import pytest

from tests.dashboard.conftest import staff  # noqa: F401
from tests.shop.conftest import cart, catalogue, fresh_channel_layer, open_tab  # noqa: F401
from tracker.process import process_tracker, stop_process_tracker


@pytest.fixture
async def site_tracker():
    """This test loop's process tracker, stopped (with a goodbye) at the end."""
    tracker = await process_tracker()
    yield tracker
    await stop_process_tracker()
