"""Writes: creating polls, casting votes (validate and publish) and applying vote batches."""

from __future__ import annotations

import functools
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, connection, models, transaction
from django.db.models import Count, F, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from polling.randomness import random_uuid
from polls.domain.exceptions import (
    AlreadyVoted,
    InvalidChoices,
    InvalidPoll,
    OptionOutOfRange,
    PollClosed,
    SignInRequired,
    TooManyChoices,
)
from polls.domain.idempotency import KeyClaim, idempotency_claim
from polls.domain.selectors import (
    VoteTarget,
    poll_is_open,
    poll_vote_target,
    poll_vote_target_cached,
    vote_target_forget,
)
from polls.domain.sql import column, columns, placeholders, table
from polls.domain.texts import text_is_invisible, text_normalize, text_skeleton
from polls.domain.voters import Voter
from polls.domain.watchers import polls_changed_on_commit
from polls.kafka.bus import VoteBus, vote_bus
from polls.kafka.events import VoteEvent
from polls.models import AuditEntry, Option, Poll, Vote, poll_total_reset


def poll_create(
    *,
    question: str,
    options: Sequence[str],
    closes_at: datetime | None = None,
    results_visibility: str = Poll.Visibility.ALWAYS,
    one_vote_per: str = Poll.OneVotePer.NONE,
    max_choices: int = 1,
    created_by: AbstractBaseUser | None = None,
) -> Poll:
    """Create a poll with its options numbered 1..N in the given order.

    Raises InvalidPoll for a question or options that poll_question_clean or
    poll_options_clean refuse; stores them as those return them.
    """
    question = poll_question_clean(question=question)
    options = poll_options_clean(options=options, max_choices=max_choices)
    with transaction.atomic():
        poll = Poll.objects.create(
            question=question,
            closes_at=closes_at,
            results_visibility=results_visibility,
            one_vote_per=one_vote_per,
            max_choices=max_choices,
            created_by=created_by,
        )
        Option.objects.bulk_create(
            Option(poll=poll, position=position, text=text) for position, text in enumerate(options, start=1)
        )
    return poll


def _text_clean(text: str, *, field: str, what: str, max_length: int) -> str:
    stored = text_normalize(text)
    if text_is_invisible(stored):
        raise InvalidPoll(field, f"{what} has no visible text.", schema_valid=True)
    if len(stored) > max_length:
        raise InvalidPoll(field, f"{what} is longer than {max_length} characters.")
    return stored


def poll_question_clean(*, question: str) -> str:
    """The question as stored (see polls.domain.texts.text_normalize); raises InvalidPoll when
    it shows nothing (whitespace, zero-width or bidi controls only) or is too long."""
    return _text_clean(
        question, field="question", what="The question", max_length=Poll._meta.get_field("question").max_length
    )


def poll_options_clean(*, options: Sequence[str], max_choices: int) -> list[str]:
    """The options as stored, in order; raises InvalidPoll for fewer than 2 or more than
    POLL_MAX_OPTIONS of them, one that shows nothing, two that look alike (the same
    polls.domain.texts.text_skeleton: `Red`, `red`, `Ｒｅｄ`, `Red` with a zero-width space), or a
    max_choices outside 1..their number.

    The one place these rules live: the API and the admin both call it.
    """
    maximum = settings.POLL_MAX_OPTIONS
    if not 2 <= len(options) <= maximum:
        raise InvalidPoll("options", f"A poll has 2 to {maximum} options; this one has {len(options)}.")
    max_length = Option._meta.get_field("text").max_length
    stored = [
        _text_clean(text, field="options", what=f"Option {position}", max_length=max_length)
        for position, text in enumerate(options, start=1)
    ]
    first_with: dict[str, int] = {}
    for position, text in enumerate(stored, start=1):
        earlier = first_with.setdefault(text_skeleton(text), position)
        if earlier != position:
            raise InvalidPoll(
                "options",
                f"Options {earlier} and {position} look the same; options must differ from one another.",
                schema_valid=True,
            )
    if not 1 <= max_choices <= len(stored):
        raise InvalidPoll("max_choices", f"Max choices must be between 1 and the number of options ({len(stored)}).")
    return stored


def poll_set_status(*, poll: Poll, status: str, actor: AbstractBaseUser | None = None) -> Poll:
    """Close or reopen a poll, with an audit record of who did it.

    A close of a closed poll, or a reopen of one that is open (its deadline, if any, not
    passed), changes nothing: no audit entry, no new version, no broadcast.
    """
    action = AuditEntry.Action.CLOSE if status == Poll.Status.CLOSED else AuditEntry.Action.REOPEN
    if poll.status == status and (
        status == Poll.Status.CLOSED or poll_is_open(status=poll.status, closes_at=poll.closes_at)
    ):
        return poll
    with transaction.atomic():
        poll.status = status
        if status == Poll.Status.OPEN and poll.closes_at is not None and poll.closes_at <= timezone.now():
            # Reopening a poll past its deadline would leave it closed: the deadline goes.
            poll.closes_at = None
        _save_and_bump_version(poll, ["status", "closes_at"])
        AuditEntry.objects.create(poll=poll, action=action, actor=actor)
        polls_changed_on_commit(poll_ids=[poll.pk])
    return poll


def poll_set_hidden(*, poll: Poll, hidden: bool, actor: AbstractBaseUser | None = None) -> Poll:
    """Hide a poll from the API, the leaderboard and the WebSockets, or show it again."""
    with transaction.atomic():
        poll.hidden = hidden
        _save_and_bump_version(poll, ["hidden"])
        AuditEntry.objects.create(
            poll=poll, action=AuditEntry.Action.HIDE if hidden else AuditEntry.Action.UNHIDE, actor=actor
        )
        polls_changed_on_commit(poll_ids=[poll.pk])
    return poll


def _save_and_bump_version(poll: Poll, fields: list[str]) -> None:
    """Save the fields and grow the version, so live viewers take the change as news."""
    Poll.objects.filter(pk=poll.pk).update(
        **{name: getattr(poll, name) for name in fields}, version=F("version") + 1, state_version=F("version") + 1
    )
    vote_target_forget(poll.pk)  # an update() sends no post_save
    poll.refresh_from_db(fields=["version", "state_version"])


def vote_cast(
    *,
    poll_id: int,
    options: Sequence[int],
    voter: Voter,
    idempotency_key: str | None = None,
) -> VoteEvent:
    """Check a ballot against the poll and make it durable on the vote bus.

    Returns only once the bus has accepted the vote (for Kafka: acknowledged by all
    in-sync replicas); raises PollNotFound, PollClosed, OptionOutOfRange,
    InvalidChoices, TooManyChoices, SignInRequired, AlreadyVoted or VoteBusUnavailable
    otherwise, and then nothing was published. With an idempotency key (polls.domain.idempotency),
    a retry of an accepted ballot returns that ballot (its voter_key the one it was cast
    as) and publishes nothing; the key may also raise IdempotencyKeyReused,
    IdempotencyKeyInUse or IdempotencyUnavailable.
    """
    if idempotency_key is None:
        return _vote_publish(_vote_check(random_uuid(), poll_id, options, voter))
    claim, event = _keyed_check(poll_id, options, voter, idempotency_key)
    if claim is None:
        return event
    try:
        _vote_publish(event)
    except BaseException:
        claim.fail()  # perhaps published all the same
        raise
    claim.settle(voter_key=event.voter_key)
    return event


def _keyed_check(
    poll_id: int, options: Sequence[int], voter: Voter, idempotency_key: str
) -> tuple[KeyClaim | None, VoteEvent]:
    """The key claimed and the ballot checked: (the claim, the event to publish), or
    (None, the ballot first accepted) for a retry, which publishes nothing."""
    claim = idempotency_claim(poll_id=poll_id, voter=voter, idempotency_key=idempotency_key, options=options)
    if claim.replay_voter_key is not None:
        # Answered as the first time, even once the poll has closed (the client may
        # have missed the first answer).
        return None, _ballot(claim.vote_id, poll_id, options, claim.replay_voter_key, None)
    try:
        return claim, _vote_check(claim.vote_id, poll_id, options, voter)
    except BaseException:
        claim.release()  # nothing published: the key is free
        raise


@functools.cache
def _vote_threads() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=settings.VOTE_THREADS, thread_name_prefix="vote")


def in_vote_thread(func):
    """`func` as a coroutine run on the process's vote threads (VOTE_THREADS of them), not
    the loop's default executor: that has a handful, and votes waiting on a database
    that is down (DB_POOL_TIMEOUT each) held every one, so later votes queued for longer
    than the outage instead of hearing 503."""
    return sync_to_async(func, thread_sensitive=False, executor=_vote_threads())


async def vote_cast_async(
    *,
    poll_id: int,
    options: Sequence[int],
    voter: Voter,
    idempotency_key: str | None = None,
) -> VoteEvent:
    """vote_cast for an event loop: the same checks, the bus's acknowledgement awaited on the loop.

    A ballot for a poll this process has cached, with no one-vote-per rule, is checked
    on the loop; one that needs the database (the poll not cached, a one-vote-per rule)
    on a vote thread (in_vote_thread), whose connection goes back to the pool before
    the vote is published. A keyed vote's claim and check, and then its record, are
    made on such a thread (the shared cache and the database); its publishing awaited
    on the loop like any other.
    """
    if idempotency_key is not None:
        claim, event = await in_vote_thread(_then_release(_keyed_check))(poll_id, options, voter, idempotency_key)
        if claim is None:
            return event
        try:
            await get_vote_bus().publish_async(event)
        except BaseException:
            await in_vote_thread(claim.fail)()  # perhaps published all the same
            raise
        await in_vote_thread(claim.settle)(voter_key=event.voter_key)
        return event
    target = poll_vote_target_cached(poll_id=poll_id)
    if target is None or target.one_vote_per != Poll.OneVotePer.NONE:
        event = await in_vote_thread(_then_release(_vote_check))(random_uuid(), poll_id, options, voter)
    else:
        event = _vote_check(random_uuid(), poll_id, options, voter, target=target)
    await get_vote_bus().publish_async(event)
    return event


def _vote_check(
    vote_id: uuid.UUID, poll_id: int, options: Sequence[int], voter: Voter, *, target: VoteTarget | None = None
) -> VoteEvent:
    """The ballot, checked against the poll (`target`, or read: cached, else one SELECT);
    raises the vote's domain errors."""
    if target is None:
        target = poll_vote_target(poll_id=poll_id)
    if not target.is_open:
        raise PollClosed(poll_id)
    if len(set(options)) != len(options):
        raise InvalidChoices("The same option is chosen twice.")
    if len(options) > target.max_choices:
        raise TooManyChoices(
            f"At most {target.max_choices} option{'s' if target.max_choices > 1 else ''} may be chosen in this poll."
        )
    for option in options:
        if not 1 <= option <= target.option_count:
            raise OptionOutOfRange(option, target.option_count)

    dedupe_key = None
    if target.one_vote_per == Poll.OneVotePer.USER:
        if voter.user_id is None:
            raise SignInRequired("vote in this poll: it takes one vote per signed-in user")
        dedupe_key = f"user:{voter.user_id}"
    elif target.one_vote_per == Poll.OneVotePer.VOTER:
        dedupe_key = voter.key
    # The database's unique constraint is what guarantees one ballot; this check only
    # lets most duplicates hear 409 instead of a 204 for a vote that will not count.
    if dedupe_key and Vote.objects.filter(poll_id=poll_id, dedupe_key=dedupe_key).exists():
        raise AlreadyVoted(poll_id)

    return _ballot(vote_id, poll_id, options, voter.key, dedupe_key)


def get_vote_bus() -> VoteBus:
    """The process's vote bus: Kafka, or in the embedded mode votes_apply at once."""
    return vote_bus(apply_in_process=votes_apply)


def _vote_publish(event: VoteEvent) -> VoteEvent:
    _release_connection()
    get_vote_bus().publish(event)
    return event


def _then_release(function):
    """`function`, then this thread's database connection back to the pool, whatever happened."""

    def call(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        finally:
            _release_connection()

    return call


def _release_connection() -> None:
    """Give the database connection back to the pool before waiting on the vote bus.

    Publishing waits up to VOTE_PUBLISH_TIMEOUT for the broker's acknowledgement; with
    the broker down, every vote in flight held a pooled connection for that long, the
    pool ran dry and the API stopped answering at all (found by tests/faults). The vote
    path reads nothing after this; anything that does gets a connection again.
    Inside an atomic block (a test's transaction, ATOMIC_REQUESTS) it is left alone.
    """
    if not connection.in_atomic_block:
        connection.close()


def _ballot(
    vote_id: uuid.UUID, poll_id: int, options: Sequence[int], voter_key: str, dedupe_key: str | None
) -> VoteEvent:
    return VoteEvent(
        vote_id=vote_id,
        poll_id=poll_id,
        options=tuple(options),
        voter_key=voter_key,
        cast_at=timezone.now(),
        dedupe_key=dedupe_key,
    )


@dataclass
class AppliedBatch:
    """What one batch did to the database."""

    applied: int = 0
    duplicates: int = 0
    # Events that can never be applied (their poll or option no longer exists), with why.
    rejected: list[tuple[VoteEvent, str]] = field(default_factory=list)
    poll_ids: set[int] = field(default_factory=set)


# Rows per INSERT statement where rows are sent as VALUES (SQLite): keeps the parameter
# count far below SQLite's limit while a batch still costs a handful of round trips.
_INSERT_CHUNK = 1000

# (row vote_id, ballot event, option_id, dedupe_key)
_Row = tuple[uuid.UUID, VoteEvent, int, "str | None"]


def votes_apply(*, events: Iterable[VoteEvent]) -> AppliedBatch:
    """Apply a batch of vote events in one transaction, idempotently.

    Vote rows are inserted with ON CONFLICT DO NOTHING, so a ballot seen before (a Kafka
    redelivery) or a second ballot of a voter on a one-vote-per-voter poll inserts
    nothing; only the rows actually inserted are added to the option counters, with
    one UPDATE for all touched options (on PostgreSQL; one per option elsewhere), and
    every touched poll's version grows by one. Broadcasts of the new totals are queued
    to run after the transaction commits.
    """
    result = AppliedBatch()
    # Keyed by the id's integer: a UUID's own hash is a Python call, once per vote.
    unique: dict[int, VoteEvent] = {}
    seen = 0
    for event in events:
        unique.setdefault(event.vote_id.int, event)
        seen += 1
    result.duplicates = seen - len(unique)
    if not unique:
        return result

    with transaction.atomic():
        option_ids = _options_lock(poll_ids={event.poll_id for event in unique.values()})
        firsts: list[_Row] = []  # each ballot's first row
        multiple: list[list[_Row]] = []  # all rows of each ballot of several choices
        for event in unique.values():
            options = event.options
            if len(options) == 1:  # most ballots: one row, no list of rows to build
                option_id = option_ids.get((event.poll_id, options[0]))
                if option_id is None:
                    result.rejected.append((event, _no_option(event, options[0])))
                else:
                    firsts.append((event.vote_id, event, option_id, event.dedupe_key))
                continue
            rows: list[_Row] = []
            for row_id, option in event.row_ids():
                option_id = option_ids.get((event.poll_id, option))
                if option_id is None:
                    result.rejected.append((event, _no_option(event, option)))
                    break
                # Only the first row carries the dedupe key: the unique (poll, dedupe_key)
                # then allows one ballot per voter, however many options it chose.
                rows.append((row_id, event, option_id, event.dedupe_key if not rows else None))
            else:
                firsts.append(rows[0])
                multiple.append(rows)

        first_inserted = _insert_rows(firsts)
        # Counted from the inserted rows themselves: no lookup by id per vote.
        inserted: Counter[int] = Counter(row[2] for row in first_inserted)
        if multiple:
            new_ballots = {row[0] for row in first_inserted}
            # The other choices of a ballot go in only when its first row did.
            rest = [row for rows in multiple if rows[0][0] in new_ballots for row in rows[1:]]
            inserted.update(row[2] for row in _insert_rows(rest))

        result.applied = len(first_inserted)
        result.duplicates += len(firsts) - result.applied
        # Per poll from the per-option counts: no pass over the rows again.
        poll_of = {option_id: poll_id for (poll_id, _), option_id in option_ids.items()}
        added: Counter[int] = Counter()
        for option_id, count in inserted.items():
            added[poll_of[option_id]] += count
        result.poll_ids = set(added)
        if added:
            # The options' counters, then each touched poll's total and version: the
            # rows are locked already (_options_lock), so no other batch touches them.
            _counters_add(counts=inserted)
            _add_by_id(Poll, "total", added, plus_one="version")
            polls_changed_on_commit(poll_ids=result.poll_ids)
    return result


def _no_option(event: VoteEvent, option: int) -> str:
    return f"poll {event.poll_id} has no option {option}"


def _options_lock(*, poll_ids: set[int]) -> dict[tuple[int, int], int]:
    """The options of these polls by (poll, position), locked until the batch commits.

    Call inside the batch transaction. The rows are locked in id order, the same order
    in every worker, so two workers applying overlapping batches during a rebalance
    wait for each other here instead of deadlocking on the counter or version updates
    later in the transaction (whatever order those statements visit their rows in).
    NO KEY UPDATE is the lock the counter UPDATE takes anyway; it does not block the
    foreign-key checks of other transactions inserting votes. SQLite has no such lock: a
    SQLite transaction holds the whole database. Hand-written, like the batch's other
    statements: the ORM would compile the queryset on every batch.
    """
    ids = sorted(poll_ids)
    lock = " FOR NO KEY UPDATE" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {columns(Option, ('id', 'poll', 'position'))} FROM {table(Option)} "
            f"WHERE {column(Option, 'poll')} IN ({placeholders(len(ids))}) ORDER BY {column(Option, 'id')}{lock}",
            ids,
        )
        return {(poll_id, position): option_id for option_id, poll_id, position in cursor.fetchall()}


def _add_by_id(model: type[models.Model], field: str, counts: Counter[int], *, plus_one: str | None = None) -> None:
    """Add counts[id] to `field` of each row (and one to `plus_one`, if named). Call inside
    the batch transaction, with the rows locked.

    One hand-written UPDATE ... FROM unnest on PostgreSQL (the ORM would compile its update
    on every batch); one update per row elsewhere.
    """
    ids = sorted(counts)
    if connection.vendor == "postgresql":
        target, pk = column(model, field), column(model, "id")
        sets = f"{target} = t.{target} + v.n"
        if plus_one:
            sets += f", {column(model, plus_one)} = t.{column(model, plus_one)} + 1"
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table(model)} AS t SET {sets} "
                f"FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, n) WHERE t.{pk} = v.id",
                [ids, [counts[row_id] for row_id in ids]],
            )
        return
    for row_id in ids:
        changes = {field: F(field) + counts[row_id], **({plus_one: F(plus_one) + 1} if plus_one else {})}
        model.objects.filter(pk=row_id).update(**changes)


def _counters_add(*, counts: Counter[int]) -> None:
    """Add each option's newly inserted rows to its counter."""
    _add_by_id(Option, "votes", counts)


def _insert_rows(rows: list[_Row]) -> list[_Row]:
    """INSERT vote rows, skipping any that conflict; return those inserted.

    Django's bulk_create(ignore_conflicts=True) cannot tell which rows were inserted,
    and that is exactly what the counters need, hence RETURNING.
    """
    if not rows:
        return []
    if connection.vendor == "postgresql":
        if _insert_copy(rows):
            return rows
        inserted_ids = _insert_unnest(rows)
    else:
        inserted_ids = []
        for start in range(0, len(rows), _INSERT_CHUNK):
            inserted_ids.extend(_insert_chunk(rows[start : start + _INSERT_CHUNK]))
    # Only after a conflict (a redelivery, a second ballot of a voter): the rows by id.
    by_id = {row[0]: row for row in rows}
    return [by_id[row_id] for row_id in inserted_ids]


_VOTE_COLUMNS = ("vote_id", "ballot_id", "poll", "option", "voter_key", "dedupe_key", "cast_at", "applied_at")


# The binary COPY's types of _VOTE_COLUMNS (its rows carry no type of their own).
_COPY_TYPES = ("uuid", "uuid", "int8", "int8", "text", "text", "timestamptz", "timestamptz")


def _vote_insert(source: str) -> str:
    """INSERT of vote rows from `source` (VALUES or SELECT), skipping conflicts, returning the inserted vote_ids."""
    return (
        f"INSERT INTO {table(Vote)} ({columns(Vote, _VOTE_COLUMNS)}) {source} "
        f"ON CONFLICT DO NOTHING RETURNING {column(Vote, 'vote_id')}"
    )


def _insert_copy(rows: list[_Row]) -> bool:
    """PostgreSQL's fast path: COPY all rows; False when one conflicts (then nothing was inserted).

    Nearly every batch conflicts with nothing, and for those COPY costs the database
    less than the INSERT ... ON CONFLICT: no speculative insertion per row, no arrays to
    unpack, nothing returned. A batch that does conflict (a redelivery, a second ballot
    of a voter) fails on the unique constraint; the savepoint undoes the COPY and the
    caller inserts the batch with ON CONFLICT DO NOTHING, which counts what is new.
    Binary, not text: nothing is formatted as text and parsed back
    (docs/decisions/0007-worker-batch-statements.md).
    """
    now = timezone.now()
    sql = f"COPY {table(Vote)} ({columns(Vote, _VOTE_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
    try:
        with (
            transaction.atomic(),
            connection.cursor() as cursor,
            connection.wrap_database_errors,
            cursor.copy(sql) as copy,
        ):
            copy.set_types(_COPY_TYPES)
            for row_id, event, option_id, dedupe_key in rows:
                copy.write_row(
                    (row_id, event.vote_id, event.poll_id, option_id, event.voter_key, dedupe_key, event.cast_at, now)
                )
    except IntegrityError:
        return False
    return True


def _insert_unnest(rows: list[_Row]) -> list[uuid.UUID]:
    """PostgreSQL: all rows in one INSERT ... SELECT FROM unnest(one array per column).

    A statement of eight parameters whatever the batch size, so the query text is the
    same every time. A VALUES list with a placeholder per value cost more in Django's
    per-field conversion and in psycopg's parsing of the query than the insert took in
    the database. The uuid, integer and time arrays go as array literals built here:
    psycopg's generic list adaptation cost more per row than the rest of the insert.
    Their text needs no quoting; the voter and dedupe keys (any text) are left to psycopg.
    """
    sql = _vote_insert(
        "SELECT v.*, %s FROM unnest(%s::uuid[], %s::uuid[], %s::bigint[], %s::bigint[], "
        "%s::text[], %s::text[], %s::timestamptz[]) "
        "AS v(vote_id, ballot_id, poll_id, option_id, voter_key, dedupe_key, cast_at)"
    )
    row_ids = [str(row[0]) for row in rows]
    # A ballot's first row has the ballot's own id: its text is made once.
    ballot_ids = [text if row[0] is row[1].vote_id else str(row[1].vote_id) for text, row in zip(row_ids, rows)]
    params = [
        timezone.now(),
        _array_literal(row_ids),
        _array_literal(ballot_ids),
        _array_literal(str(row[1].poll_id) for row in rows),
        _array_literal(str(row[2]) for row in rows),
        [row[1].voter_key for row in rows],
        [row[3] for row in rows],
        _array_literal(row[1].cast_at.isoformat() for row in rows),
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [vote_id for (vote_id,) in cursor.fetchall()]


def _array_literal(items: Iterable[str]) -> str:
    """A PostgreSQL array literal of items that need no quoting (no comma, brace, quote or space)."""
    return "{" + ",".join(items) + "}"


def _insert_chunk(rows: list[_Row]) -> list[uuid.UUID]:
    if not rows:
        return []
    fields = [Vote._meta.get_field(name) for name in _VOTE_COLUMNS]
    now = timezone.now()
    params: list[object] = []
    for row_id, event, option_id, dedupe_key in rows:
        values = (row_id, event.vote_id, event.poll_id, option_id, event.voter_key, dedupe_key, event.cast_at, now)
        params.extend(f.get_db_prep_value(v, connection) for f, v in zip(fields, values))
    rows_sql = ", ".join([f"({placeholders(len(fields))})"] * len(rows))
    sql = _vote_insert(f"VALUES {rows_sql}")
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        # SQLite hands back the uuid as 32 hex digits, PostgreSQL as a UUID.
        return [uuid.UUID(str(vote_id)) for (vote_id,) in cursor.fetchall()]


@dataclass(frozen=True)
class CounterMismatch:
    poll_id: int
    position: int  # 0: the poll's total
    counter: int
    rows: int


def counters_verify(*, repair: bool = False) -> list[CounterMismatch]:
    """Every option whose counter, and every poll whose total, differs from its number of
    vote rows; optionally fix them.

    A repair sets each wrong counter to a count taken in the UPDATE itself. Run it with
    the workers stopped: a batch committing between the check and the repair would be
    reported as a mismatch, although the repair still leaves the counter right.
    """
    options = Option.objects.annotate(rows=Count("vote_rows")).exclude(votes=F("rows")).order_by("poll_id", "position")
    mismatches = [
        CounterMismatch(poll_id=o.poll_id, position=o.position, counter=o.votes, rows=o.rows) for o in options
    ]
    if repair and mismatches:
        row_count = (
            Vote.objects.filter(option=OuterRef("pk")).order_by().values("option").annotate(n=Count("*")).values("n")
        )
        with transaction.atomic():
            for mismatch in mismatches:
                Option.objects.filter(poll_id=mismatch.poll_id, position=mismatch.position).update(
                    votes=Coalesce(Subquery(row_count), 0)
                )
    # Each poll's kept total against its vote rows (a repair sets it to its options'
    # counters, which equal their rows once repaired).
    totals = Poll.objects.annotate(counted=Count("votes")).exclude(total=F("counted")).order_by("pk")
    wrong_totals = [CounterMismatch(poll_id=p.pk, position=0, counter=p.total, rows=p.counted) for p in totals]
    if repair and wrong_totals:
        poll_total_reset(pk__in=[mismatch.poll_id for mismatch in wrong_totals])
    return mismatches + wrong_totals
