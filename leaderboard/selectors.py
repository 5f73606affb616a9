"""Rankings: options by votes (across polls or in one poll), and polls by total votes."""

from __future__ import annotations

from functools import cache
from typing import Any

from django.db import connection

from polls.domain.sql import column, table
from polls.models import Option, Poll


def leaderboard_top(*, limit: int, poll_id: int | None = None) -> list[dict[str, Any]]:
    """Options ranked by votes, most first; ties by poll id, then position.

    Polls that are hidden, or whose results are not public yet, stay out. The order
    matches the option_rank_idx index, so the database reads the top rows off the index
    instead of sorting every option. One hand-written statement, read fresh every time:
    the ORM spent more CPU compiling the same query per request than PostgreSQL spent
    running it (docs/decisions/0005-vote-checks-off-the-hot-path.md).
    """
    sql, params = _top_sql(by_poll=poll_id is not None), [Poll.Visibility.ALWAYS, False]
    if poll_id is not None:
        params.append(poll_id)
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, limit])
        rows = cursor.fetchall()
    return [
        {"option": text, "count": votes, "poll_id": poll, "position": position, "question": question}
        for text, votes, poll, position, question in rows
    ]


@cache
def _top_sql(*, by_poll: bool) -> str:
    """leaderboard_top's SELECT."""
    o_poll = f"o.{column(Option, 'poll')}"
    return (
        f"SELECT o.{column(Option, 'text')}, o.{column(Option, 'votes')}, {o_poll}, o.{column(Option, 'position')}, "
        f"p.{column(Poll, 'question')} "
        f"FROM {table(Option)} o INNER JOIN {table(Poll)} p ON {o_poll} = p.{column(Poll, 'id')} "
        f"WHERE p.{column(Poll, 'results_visibility')} = %s AND p.{column(Poll, 'hidden')} = %s"
        + (f" AND {o_poll} = %s" if by_poll else "")
        + f" ORDER BY o.{column(Option, 'votes')} DESC, {o_poll} ASC, o.{column(Option, 'position')} ASC LIMIT %s"
    )


def leaderboard_polls(*, limit: int) -> list[dict[str, Any]]:
    """Polls ranked by their total votes, most first; ties by poll id."""
    rows = (
        Poll.objects.filter(hidden=False, results_visibility=Poll.Visibility.ALWAYS)
        .order_by("-total", "id")  # poll_total_rank_idx: the top rows, not a sum of every option
        .values("id", "question", "total")[:limit]
    )
    return [{"poll_id": row["id"], "question": row["question"], "total": row["total"]} for row in rows]
