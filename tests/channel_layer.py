"""An autouse fixture for test packages that talk to the in-memory channel layer: import it
into the package's conftest to use it there."""

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """Each test starts with an empty in-memory channel layer (no groups left by others)."""
    async_to_sync(get_channel_layer().flush)()
    yield
    async_to_sync(get_channel_layer().flush)()
