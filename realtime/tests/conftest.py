"""Fixtures of the realtime tests: the real Redis channel layer and a fresh broadcaster."""

from __future__ import annotations

import pytest
from channels.layers import channel_layers, get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer

from realtime.broadcast import reset_broadcaster
from realtime.consumers import connection_slots
from testsupport.browser import chromium  # noqa: F401 - the fixture, for the live page tests


@pytest.fixture
def live(transactional_db, settings):
    """Committed data (the broadcaster reads from its own thread) over the real Redis layer.

    Depends on transactional_db so that its teardown (stopping the broadcaster thread and
    its database connection) runs before the test database is flushed.
    """
    assert settings.REDIS_URL, "the test services must export REDIS_URL"
    channel_layers.backends.clear()
    layer = get_channel_layer()
    assert isinstance(layer, RedisPubSubChannelLayer), f"expected the Redis pub/sub layer, got {layer!r}"
    reset_broadcaster()
    yield layer
    reset_broadcaster()
    channel_layers.backends.clear()
    assert connection_slots.open == 0, "a test left WebSocket connections counted as open"
