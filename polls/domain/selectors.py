"""Reads of polls and their totals."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, F, Q, QuerySet, When
from django.db.models.expressions import OrderBy
from django.utils import timezone

from polls.domain.exceptions import PollNotFound
from polls.domain.sql import column, datetime_from_db, table
from polls.domain.voters import Voter
from polls.models import AuditEntry, Option, Poll, Vote


def poll_is_open(*, status: str, closes_at: datetime | None, now: datetime | None = None) -> bool:
    return status == Poll.Status.OPEN and (closes_at is None or closes_at > (now or timezone.now()))


def poll_get(*, poll_id: int, include_hidden: bool = False) -> Poll:
    """The poll with its options prefetched in position order; hidden polls only on request."""
    polls = Poll.objects.prefetch_related("options")
    if not include_hidden:
        polls = polls.filter(hidden=False)
    poll = polls.filter(pk=poll_id).first()
    if poll is None:
        raise PollNotFound(poll_id)
    return poll


@dataclass(frozen=True)
class VoteTarget:
    """What a vote is checked against, read with one query."""

    id: int
    status: str
    closes_at: datetime | None
    one_vote_per: str
    max_choices: int
    option_count: int

    @property
    def is_open(self) -> bool:
        return poll_is_open(status=self.status, closes_at=self.closes_at)


def poll_vote_target(*, poll_id: int) -> VoteTarget:
    """The poll a vote is checked against: from this process's cache, or one SELECT.

    A target read outside a transaction is kept for VOTE_TARGET_CACHE_SECONDS (0: read
    on every vote). Within this process any change of the poll forgets it at once (the
    services that close, reopen or hide it, and every save or delete of a poll or an
    option: the admin, the ORM); another process sees the change when its copy expires.
    `is_open` compares closes_at with the clock on every vote. Not cached: a poll that is
    not found or hidden (a new poll is votable at once), and what is read inside a
    transaction (it may be uncommitted, or rolled back). Why a copy: the SELECT and the
    pooled connection it takes cost more than the rest of the vote's checks
    (docs/decisions/0005-vote-checks-off-the-hot-path.md).
    """
    if not -(2**63) <= poll_id < 2**63:  # out of the id column's range: no such poll (as the ORM says)
        raise PollNotFound(poll_id)
    max_age = settings.VOTE_TARGET_CACHE_SECONDS
    cacheable = max_age > 0 and not connection.in_atomic_block
    if cacheable:
        kept = _vote_targets.get(poll_id)
        if kept is not None and time.monotonic() < kept[0]:
            return kept[1]
    # The age counts from before the read, and a change forgotten while the SELECT was
    # under way (a new generation) keeps its result out of the cache.
    generation = _vote_targets_generation
    expires = time.monotonic() + max_age
    target = _vote_target_read(poll_id)
    if cacheable:
        with _vote_targets_lock:
            if generation == _vote_targets_generation:
                if len(_vote_targets) >= _VOTE_TARGETS_MAX:
                    _vote_targets.clear()
                _vote_targets[poll_id] = (expires, target)
    return target


def poll_vote_target_cached(*, poll_id: int) -> VoteTarget | None:
    """The poll's vote target if this process holds a fresh copy, else None: never the database."""
    kept = _vote_targets.get(poll_id)
    if kept is not None and time.monotonic() < kept[0] and settings.VOTE_TARGET_CACHE_SECONDS > 0:
        return kept[1]
    return None


def vote_target_forget(poll_id: int | None = None) -> None:
    """Forget the cached vote target of a poll (of every poll: None), now and when the transaction commits.

    Forgetting only now would let a vote read the old row before the change commits and
    keep it; forgetting again after the commit drops that copy.
    """
    _vote_target_drop(poll_id)
    if connection.in_atomic_block:
        transaction.on_commit(lambda: _vote_target_drop(poll_id))


def _vote_target_drop(poll_id: int | None) -> None:
    global _vote_targets_generation
    with _vote_targets_lock:
        _vote_targets_generation += 1
        if poll_id is None:
            _vote_targets.clear()
        else:
            _vote_targets.pop(poll_id, None)


# poll id -> (time.monotonic() it expires, target). Bounded: when full it starts over.
_vote_targets: dict[int, tuple[float, VoteTarget]] = {}
_vote_targets_lock = threading.Lock()
_vote_targets_generation = 0
_VOTE_TARGETS_MAX = 10_000


def _vote_target_read(poll_id: int) -> VoteTarget:
    """One hand-written statement: the ORM compiled its annotated queryset on every call,
    for more CPU than the query (docs/decisions/0005-vote-checks-off-the-hot-path.md)."""
    with connection.cursor() as cursor:
        cursor.execute(_vote_target_sql(), [poll_id, False])
        row = cursor.fetchone()
    if row is None:
        raise PollNotFound(poll_id)
    poll_pk, status, closes_at, one_vote_per, max_choices, option_count = row
    return VoteTarget(poll_pk, status, datetime_from_db(closes_at), one_vote_per, max_choices, option_count)


@cache
def _vote_target_sql() -> str:
    """The vote target's SELECT (one statement: the poll's row and its number of options)."""
    return (
        f"SELECT p.{column(Poll, 'id')}, p.{column(Poll, 'status')}, p.{column(Poll, 'closes_at')}, "
        f"p.{column(Poll, 'one_vote_per')}, p.{column(Poll, 'max_choices')}, "
        f"(SELECT COUNT(*) FROM {table(Option)} o WHERE o.{column(Option, 'poll')} = p.{column(Poll, 'id')}) "
        f"FROM {table(Poll)} p WHERE p.{column(Poll, 'id')} = %s AND p.{column(Poll, 'hidden')} = %s"
    )


def poll_closed_by_staff(*, poll_id: int) -> bool:
    """Whether the poll's last close or reopen was a close by a staff member."""
    last = (
        AuditEntry.objects.filter(poll_id=poll_id, action__in=[AuditEntry.Action.CLOSE, AuditEntry.Action.REOPEN])
        .select_related("actor")
        .order_by("-at", "-id")
        .first()
    )
    return (
        last is not None and last.action == AuditEntry.Action.CLOSE and last.actor is not None and last.actor.is_staff
    )


def voter_has_voted(*, poll_id: int, voter: Voter) -> bool:
    return Vote.objects.filter(poll_id=poll_id, voter_key=voter.key).exists()


def poll_results_visible(*, poll: Poll, voter: Voter | None) -> bool:
    """Whether this viewer may see the counts (the poll's stand against bandwagoning)."""
    if poll.results_visibility == Poll.Visibility.ALWAYS:
        return True
    if poll.results_visibility == Poll.Visibility.AFTER_CLOSE:
        return not poll_is_open(status=poll.status, closes_at=poll.closes_at)
    if not poll_is_open(status=poll.status, closes_at=poll.closes_at):
        return True
    return voter is not None and voter_has_voted(poll_id=poll.pk, voter=voter)


def poll_totals(*, poll: Poll, visible: bool = True, options: Sequence[Option] | None = None) -> dict[str, Any]:
    """The poll in the seed's shape (id, question, option1..N counts) plus richer fields.

    When the viewer may not see the results yet, every count is null and
    `results_hidden` is true. `options` (in position order) are the poll's options when
    the caller read them with the poll; otherwise they are read (or prefetched) here.
    """
    options = list(poll.options.all()) if options is None else list(options)
    data: dict[str, Any] = {"id": poll.pk, "question": poll.question}
    for option in options:
        data[f"option{option.position}"] = option.votes if visible else None
    data["options"] = [
        {"position": option.position, "text": option.text, "count": option.votes if visible else None}
        for option in options
    ]
    data["total"] = sum(option.votes for option in options) if visible else None
    data["status"] = (
        Poll.Status.OPEN if poll_is_open(status=poll.status, closes_at=poll.closes_at) else Poll.Status.CLOSED
    )
    data["closes_at"] = poll.closes_at.isoformat() if poll.closes_at else None
    data["results_visibility"] = poll.results_visibility
    data["results_hidden"] = not visible
    data["one_vote_per"] = poll.one_vote_per
    data["max_choices"] = poll.max_choices
    # Held back, the counts' version would tell about how many batches came in: what is
    # shown then changes only with the poll's state (state_version, never above version).
    data["version"] = poll.version if visible else poll.state_version
    data["created_at"] = poll.created_at.isoformat()
    return data


def poll_list(*, status: str | None = None, search: str | None = None, ordering: str = "-created_at") -> QuerySet[Poll]:
    """Visible polls, filtered and ordered; `status` is the effective one (closes_at counts).

    Ordered by `total_votes`, a poll that holds its counts back from everyone (an open
    after_close or after_vote poll) has no total and comes last: ranked among the others
    by its real total, its place would give that total away (a poll of one's own,
    voted up one vote at a time, passes it). The rank is the poll's kept total
    (Poll.total), not a sum over every option of every poll.
    """
    polls = Poll.objects.filter(hidden=False).prefetch_related("options")
    now = timezone.now()
    open_q = Q(status=Poll.Status.OPEN) & (Q(closes_at__isnull=True) | Q(closes_at__gt=now))
    if status == Poll.Status.OPEN:
        polls = polls.filter(open_q)
    elif status == Poll.Status.CLOSED:
        polls = polls.exclude(open_q)
    if search:
        polls = polls.filter(question__icontains=search)
    descending = ordering.startswith("-")
    key: str | OrderBy = ordering
    if ordering.lstrip("-") == "total_votes":
        shown_to_all = Q(results_visibility=Poll.Visibility.ALWAYS) | ~open_q
        polls = polls.annotate(total_votes=Case(When(shown_to_all, then=F("total")), default=None))
        total = F("total_votes")
        key = total.desc(nulls_last=True) if descending else total.asc(nulls_last=True)
    return polls.order_by(key, "-id" if descending else "id")


def polls_results_visible(*, polls: Sequence[Poll], voter: Voter | None) -> dict[int, bool]:
    """poll_results_visible of each poll, with one query for all of those that depend on
    whether this viewer voted (open after_vote polls), not one each."""
    waiting = {
        poll.pk
        for poll in polls
        if poll.results_visibility == Poll.Visibility.AFTER_VOTE
        and poll_is_open(status=poll.status, closes_at=poll.closes_at)
    }
    voted: set[int] = set()
    if waiting and voter is not None:
        voted = set(Vote.objects.filter(poll_id__in=waiting, voter_key=voter.key).values_list("poll_id", flat=True))
    return {
        poll.pk: poll.pk in voted if poll.pk in waiting else poll_results_visible(poll=poll, voter=None)
        for poll in polls
    }
