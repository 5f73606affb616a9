"""Writes: creating polls, casting votes (validate and publish) and applying vote batches."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.db.models import Count, F, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from polls.bus import get_vote_bus
from polls.events import VoteEvent
from polls.exceptions import OptionOutOfRange, PollClosed
from polls.models import Option, Poll, Vote
from polls.selectors import poll_option_count
from realtime.broadcast import broadcast_polls_on_commit


def poll_create(*, question: str, options: Sequence[str]) -> Poll:
    """Create a poll with its options numbered 1..N in the given order."""
    with transaction.atomic():
        poll = Poll.objects.create(question=question)
        Option.objects.bulk_create(
            Option(poll=poll, position=position, text=text) for position, text in enumerate(options, start=1)
        )
    return poll


def vote_cast(*, poll_id: int, option: int, voter_key: str) -> VoteEvent:
    """Check the vote against the poll and make it durable on the vote bus.

    Returns only once the bus has accepted the vote (for Kafka: acknowledged by all
    in-sync replicas); raises PollNotFound, PollClosed, OptionOutOfRange or
    VoteBusUnavailable otherwise, and then nothing was published.
    """
    status, option_count = poll_option_count(poll_id=poll_id)
    if status != Poll.Status.OPEN:
        raise PollClosed(poll_id)
    if not 1 <= option <= option_count:
        raise OptionOutOfRange(option, option_count)
    event = VoteEvent(
        vote_id=uuid.uuid4(),
        poll_id=poll_id,
        option=option,
        voter_key=voter_key,
        cast_at=timezone.now(),
    )
    get_vote_bus().publish(event)
    return event


@dataclass
class AppliedBatch:
    """What one batch did to the database."""

    applied: int = 0
    duplicates: int = 0
    # Events that can never be applied (their poll or option no longer exists), with why.
    rejected: list[tuple[VoteEvent, str]] = field(default_factory=list)
    poll_ids: set[int] = field(default_factory=set)


# Rows per INSERT statement: keeps the parameter count far below SQLite's and
# PostgreSQL's limits while a batch still costs a handful of round trips.
_INSERT_CHUNK = 1000


def votes_apply(*, events: Iterable[VoteEvent]) -> AppliedBatch:
    """Apply a batch of vote events in one transaction, idempotently.

    Vote rows are inserted with ON CONFLICT DO NOTHING, so an event seen before (a Kafka
    redelivery) inserts nothing; only the rows actually inserted are added to the
    option counters, with one F() UPDATE per touched option. Broadcasts of the new
    totals are queued to run after the transaction commits.
    """
    result = AppliedBatch()
    unique: dict[uuid.UUID, VoteEvent] = {}
    for event in events:
        if event.vote_id in unique:
            result.duplicates += 1
        else:
            unique[event.vote_id] = event
    if not unique:
        return result

    with transaction.atomic():
        option_ids = _option_ids(poll_ids={event.poll_id for event in unique.values()})
        rows = []
        for event in unique.values():
            option_id = option_ids.get((event.poll_id, event.option))
            if option_id is None:
                result.rejected.append((event, f"poll {event.poll_id} has no option {event.option}"))
                continue
            rows.append((event, option_id))

        inserted: Counter[int] = Counter()
        for start in range(0, len(rows), _INSERT_CHUNK):
            inserted.update(_insert_votes(rows[start : start + _INSERT_CHUNK]))
        poll_of_option = {option_id: event.poll_id for event, option_id in rows}

        # A fixed order of row locks, so two workers applying overlapping batches
        # during a rebalance cannot deadlock on the counters.
        for option_id in sorted(inserted):
            Option.objects.filter(pk=option_id).update(votes=F("votes") + inserted[option_id])

        result.applied = sum(inserted.values())
        result.duplicates += len(rows) - result.applied
        result.poll_ids = {poll_of_option[option_id] for option_id in inserted}
        for poll_id in sorted(result.poll_ids):
            Poll.objects.filter(pk=poll_id).update(version=F("version") + 1)
        if result.poll_ids:
            broadcast_polls_on_commit(poll_ids=result.poll_ids)
    return result


def _option_ids(*, poll_ids: set[int]) -> dict[tuple[int, int], int]:
    return {
        (poll_id, position): option_id
        for option_id, poll_id, position in Option.objects.filter(poll_id__in=poll_ids).values_list(
            "id", "poll_id", "position"
        )
    }


def _insert_votes(rows: list[tuple[VoteEvent, int]]) -> list[int]:
    """INSERT the rows, skipping any whose vote_id exists; return the inserted option ids.

    Django's bulk_create(ignore_conflicts=True) cannot tell which rows were inserted,
    and that is exactly what the counters need, hence RETURNING.
    """
    meta = Vote._meta
    fields = [meta.get_field(name) for name in ("vote_id", "poll", "option", "voter_key", "cast_at", "applied_at")]
    now = timezone.now()
    params: list[object] = []
    for event, option_id in rows:
        values = (event.vote_id, event.poll_id, option_id, event.voter_key, event.cast_at, now)
        params.extend(f.get_db_prep_value(v, connection) for f, v in zip(fields, values))
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    placeholders = ", ".join(["(" + ", ".join(["%s"] * len(fields)) + ")"] * len(rows))
    sql = (
        f"INSERT INTO {connection.ops.quote_name(meta.db_table)} ({columns}) VALUES {placeholders} "
        f"ON CONFLICT DO NOTHING RETURNING {connection.ops.quote_name(meta.get_field('option').column)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]


@dataclass(frozen=True)
class CounterMismatch:
    poll_id: int
    position: int
    counter: int
    rows: int


def counters_verify(*, repair: bool = False) -> list[CounterMismatch]:
    """Every option whose counter differs from its number of vote rows; optionally fix them.

    A repair sets each wrong counter to a count taken in the UPDATE itself. Run it with
    the workers stopped: a batch committing between the check and the repair would be
    reported as a mismatch, although the repair still leaves the counter right.
    """
    options = (
        Option.objects.annotate(rows=Count("vote_rows"))
        .exclude(votes=F("rows"))
        .order_by("poll_id", "position")
    )
    mismatches = [
        CounterMismatch(poll_id=o.poll_id, position=o.position, counter=o.votes, rows=o.rows) for o in options
    ]
    if repair and mismatches:
        row_count = Vote.objects.filter(option=OuterRef("pk")).order_by().values("option").annotate(n=Count("*")).values("n")
        with transaction.atomic():
            for mismatch in mismatches:
                Option.objects.filter(poll_id=mismatch.poll_id, position=mismatch.position).update(
                    votes=Coalesce(Subquery(row_count), 0)
                )
    return mismatches
