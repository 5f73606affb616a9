"""Rankings: options by votes (across polls or in one poll), and polls by total votes."""

from __future__ import annotations

from typing import Any

from django.db.models import Sum

from polls.models import Option, Poll


def leaderboard_top(*, limit: int, poll_id: int | None = None) -> list[dict[str, Any]]:
    """Options ranked by votes, most first; ties by poll id, then position.

    Polls that are hidden, or whose results are not public yet, stay out. The order
    matches the option_rank_idx index, so the database reads the top rows off the index
    instead of sorting every option.
    """
    options = Option.objects.filter(poll__hidden=False, poll__results_visibility=Poll.Visibility.ALWAYS)
    if poll_id is not None:
        options = options.filter(poll_id=poll_id)
    rows = options.order_by("-votes", "poll_id", "position").values(
        "text", "votes", "poll_id", "position", "poll__question"
    )[:limit]
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


def leaderboard_polls(*, limit: int) -> list[dict[str, Any]]:
    """Polls ranked by their total votes, most first; ties by poll id."""
    rows = (
        Poll.objects.filter(hidden=False, results_visibility=Poll.Visibility.ALWAYS)
        .annotate(total=Sum("options__votes"))
        .order_by("-total", "id")
        .values("id", "question", "total")[:limit]
    )
    return [{"poll_id": row["id"], "question": row["question"], "total": row["total"] or 0} for row in rows]
