"""Small builders for test data, through the services (not by writing rows by hand)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from polls.domain.services import poll_create
from polls.kafka.events import VoteEvent
from polls.models import Poll


def make_poll(
    question: str = "Favourite colour?", options: tuple[str, ...] = ("Red", "Blue", "Green", "Yellow")
) -> Poll:
    return poll_create(question=question, options=options)


def vote_event(
    poll: Poll | int,
    *options: int,
    vote_id: uuid.UUID | None = None,
    dedupe_key: str | None = None,
    voter_key: str = "test",
) -> VoteEvent:
    return VoteEvent(
        vote_id=vote_id or uuid.uuid4(),
        poll_id=poll if isinstance(poll, int) else poll.pk,
        options=options,
        voter_key=voter_key,
        cast_at=datetime.now(UTC),
        dedupe_key=dedupe_key,
    )


def counts(poll: Poll) -> list[int]:
    """The poll's counters in position order, read fresh from the database."""
    return list(poll.options.order_by("position").values_list("votes", flat=True))
