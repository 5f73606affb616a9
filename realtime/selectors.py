"""Reads the live views need: fresh totals of one poll, of several, of the newest ones.

A poll's live totals come in two forms. `public` is what anyone may see: with the poll's
results_visibility holding the counts back (until the poll closes, or until the viewer
voted), its counts are null and `results_hidden` is true. `full` then has the counts, for
the viewers who voted in an after-vote poll; it is None when `public` already shows them.
Hidden polls have no live totals at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from leaderboard.selectors import leaderboard_top
from polls.models import Poll
from polls.selectors import poll_results_visible, poll_totals, voter_has_voted
from polls.voters import Voter


@dataclass(frozen=True)
class LiveTotals:
    public: dict[str, Any]
    full: dict[str, Any] | None

    @property
    def version(self) -> int:
        return self.public["version"]


def _live_totals(poll: Poll) -> LiveTotals:
    if poll_results_visible(poll=poll, voter=None):
        return LiveTotals(public=poll_totals(poll=poll), full=None)
    return LiveTotals(public=poll_totals(poll=poll, visible=False), full=poll_totals(poll=poll))


def _visible_polls():
    return Poll.objects.filter(hidden=False).prefetch_related("options")


@contextmanager
def _one_snapshot() -> Iterator[None]:
    """Make the poll query and its options query see the same committed state.

    Under PostgreSQL's default READ COMMITTED each statement sees its own snapshot, so a
    batch committing between the two would pair the poll's version with newer counts,
    and two messages could carry one version with different counts. SQLite's
    transactions are snapshots already.
    """
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


def poll_live_totals(*, poll_id: int) -> LiveTotals | None:
    """The poll's live totals, or None when there is no such poll or it is hidden."""
    with _one_snapshot():
        poll = _visible_polls().filter(pk=poll_id).first()
        return None if poll is None else _live_totals(poll)


def polls_live_totals(*, poll_ids: Iterable[int]) -> dict[int, LiveTotals]:
    """Live totals of those of the polls that exist and are not hidden, in two queries."""
    with _one_snapshot():
        return {poll.pk: _live_totals(poll) for poll in _visible_polls().filter(pk__in=list(poll_ids))}


def viewer_sees_results(*, totals: LiveTotals, voter: Voter) -> bool:
    """Whether this viewer may see the counts that `totals.public` holds back."""
    if totals.full is None:
        return True
    # Only an open after-vote poll shows its counts to some viewers and not to others.
    if totals.public["results_visibility"] != Poll.Visibility.AFTER_VOTE:
        return False
    return voter_has_voted(poll_id=totals.public["id"], voter=voter)


def polls_snapshot() -> dict[str, Any]:
    """What a viewer of every poll starts from: the newest polls and the leaderboard."""
    polls = _visible_polls().order_by("-created_at", "-id")[: settings.WS_SNAPSHOT_POLLS]
    return {
        "polls": [_live_totals(poll).public for poll in polls],
        "leaderboard": leaderboard_snapshot(),
    }


def leaderboard_snapshot() -> list[dict[str, Any]]:
    return leaderboard_top(limit=settings.LEADERBOARD_DEFAULT_LIMIT)
