"""Rankings of options by votes."""

from __future__ import annotations

from typing import Any

from polls.models import Option


def leaderboard_top(*, limit: int) -> list[dict[str, Any]]:
    """Options of all polls ranked by votes, most first; ties by poll id, then position.

    The order matches the option_rank_idx index, so the database reads the top rows
    off the index instead of sorting every option.
    """
    rows = (
        Option.objects.order_by("-votes", "poll_id", "position")
        .values("text", "votes", "poll_id", "position", "poll__question")[:limit]
    )
    return [
        {
            "option": row["text"],
            "count": row["votes"],
            "poll_id": row["poll_id"],
            "position": row["position"],
            "question": row["poll__question"],
        }
        for row in rows
    ]
