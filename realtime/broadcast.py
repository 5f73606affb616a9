"""Broadcast of new poll totals to WebSocket viewers, after the database committed."""

from __future__ import annotations

import functools
from collections.abc import Iterable

from django.db import transaction


def broadcast_polls_on_commit(*, poll_ids: Iterable[int]) -> None:
    """Queue a broadcast of these polls' totals for when the current transaction commits."""
    transaction.on_commit(functools.partial(_broadcast_polls, poll_ids=frozenset(poll_ids)))


def _broadcast_polls(*, poll_ids: frozenset[int]) -> None:
    # Filled in by the live-results work (coalesced group sends through the channel layer).
    return None
