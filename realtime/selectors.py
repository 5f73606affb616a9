"""What a viewer of every poll starts from: the newest polls' live totals and the leaderboard."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from leaderboard.selectors import leaderboard_top
from polls.domain.live import polls_newest_public_totals


def polls_snapshot() -> dict[str, Any]:
    """What a viewer of every poll starts from: the newest polls and the leaderboard."""
    return {
        "polls": polls_newest_public_totals(limit=settings.WS_SNAPSHOT_POLLS),
        "leaderboard": leaderboard_snapshot(),
    }


def leaderboard_snapshot() -> list[dict[str, Any]]:
    return leaderboard_top(limit=settings.LEADERBOARD_DEFAULT_LIMIT)
