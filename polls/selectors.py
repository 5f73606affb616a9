"""Reads of polls and their totals."""

from __future__ import annotations

from typing import Any

from django.db.models import Count

from polls.exceptions import PollNotFound
from polls.models import Option, Poll


def poll_get(*, poll_id: int) -> Poll:
    """The poll with its options prefetched in position order."""
    poll = Poll.objects.prefetch_related("options").filter(pk=poll_id).first()
    if poll is None:
        raise PollNotFound(poll_id)
    return poll


def poll_option_count(*, poll_id: int) -> tuple[str, int]:
    """(status, number of options) of a poll with one query: what a vote is checked against."""
    row = Poll.objects.filter(pk=poll_id).annotate(count=Count("options")).values_list("status", "count")
    try:
        return row.get()
    except Poll.DoesNotExist:
        raise PollNotFound(poll_id) from None


def poll_totals(*, poll: Poll) -> dict[str, Any]:
    """The poll in the seed's shape (id, question, option1..N counts) plus richer fields."""
    options: list[Option] = list(poll.options.all())
    data: dict[str, Any] = {"id": poll.pk, "question": poll.question}
    for option in options:
        data[f"option{option.position}"] = option.votes
    data["options"] = [
        {"position": option.position, "text": option.text, "count": option.votes} for option in options
    ]
    data["total"] = sum(option.votes for option in options)
    data["status"] = poll.status
    data["version"] = poll.version
    data["created_at"] = poll.created_at.isoformat()
    return data
