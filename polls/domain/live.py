"""Reads the live views need: fresh totals of one poll, of several, of the newest ones.

The live pages and realtime's WebSocket consumers and broadcaster read through these.

A poll's live totals come in two forms. `public` is what anyone may see: with the poll's
results_visibility holding the counts back (until the poll closes, or until the viewer
voted), its counts are null and `results_hidden` is true. `full` then has the counts, for
the viewers who voted in an after-vote poll; it is None when `public` already shows them.
Hidden polls have no live totals at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from django.db import connection

from polls.domain.selectors import poll_results_visible, poll_totals, voter_has_voted
from polls.domain.sql import column, datetime_from_db, placeholders, table
from polls.domain.voters import Voter
from polls.models import Option, Poll


@dataclass(frozen=True)
class LiveTotals:
    public: dict[str, Any]
    full: dict[str, Any] | None

    @property
    def version(self) -> int:
        return self.public["version"]


def _live_totals(poll: Poll, options: list[Option] | None = None) -> LiveTotals:
    if poll_results_visible(poll=poll, voter=None):
        return LiveTotals(public=poll_totals(poll=poll, options=options), full=None)
    return LiveTotals(
        public=poll_totals(poll=poll, visible=False, options=options),
        full=poll_totals(poll=poll, options=options),
    )


def _visible_polls():
    return Poll.objects.filter(hidden=False).prefetch_related("options")


def _visible_polls_with_options(poll_ids: Iterable[int]) -> dict[int, tuple[Poll, list[Option]]]:
    """The visible polls among these, each with its options, read by one statement.

    One statement sees one committed state (under PostgreSQL's READ COMMITTED each
    statement has its own snapshot), so a poll's version and its counts always belong
    together: two messages never carry one version with different counts. It is
    hand-written: the ORM's queryset cost more to compile and build than the read
    (docs/decisions/0007-worker-batch-statements.md).
    """
    ids = sorted(set(poll_ids))
    if not ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(_visible_polls_with_options_sql(len(ids)), [*ids, False])
        rows = cursor.fetchall()
    found: dict[int, tuple[Poll, list[Option]]] = {}
    alias = connection.alias
    width = len(_POLL_FIELDS)
    for row in rows:
        poll_id = row[0]
        entry = found.get(poll_id)
        if entry is None:
            values = list(row[:width])
            values[_POLL_CLOSES_AT] = datetime_from_db(values[_POLL_CLOSES_AT])
            values[_POLL_CREATED_AT] = datetime_from_db(values[_POLL_CREATED_AT])
            entry = found[poll_id] = (Poll.from_db(alias, _POLL_FIELDS, values), [])
        entry[1].append(Option.from_db(alias, _OPTION_FIELDS, row[width:]))
    return found


# What the live totals read of a poll and of each option, in the models' field order
# (Model.from_db takes the values in that order; the fields not read stay deferred).
_POLL_FIELDS = [
    f.attname
    for f in Poll._meta.concrete_fields
    if f.name
    in {
        "id",
        "question",
        "status",
        "closes_at",
        "results_visibility",
        "one_vote_per",
        "max_choices",
        "created_at",
        "version",
        "state_version",
    }
]
_OPTION_FIELDS = [
    f.attname for f in Option._meta.concrete_fields if f.name in {"id", "poll", "position", "text", "votes"}
]
_POLL_CLOSES_AT = _POLL_FIELDS.index("closes_at")
_POLL_CREATED_AT = _POLL_FIELDS.index("created_at")


@lru_cache(maxsize=64)
def _visible_polls_with_options_sql(count: int) -> str:
    """The statement for `count` polls, made once per count (a broadcast usually has one)."""
    poll_columns = ", ".join(f"p.{column(Poll, name)}" for name in _POLL_FIELDS)
    option_columns = ", ".join(f"o.{column(Option, name)}" for name in _OPTION_FIELDS)
    return (
        f"SELECT {poll_columns}, {option_columns} FROM {table(Option)} o "
        f"JOIN {table(Poll)} p ON p.{column(Poll, 'id')} = o.{column(Option, 'poll')} "
        f"WHERE o.{column(Option, 'poll')} IN ({placeholders(count)}) AND p.{column(Poll, 'hidden')} = %s "
        f"ORDER BY o.{column(Option, 'poll')}, o.{column(Option, 'position')}"
    )


def poll_live_totals(*, poll_id: int) -> LiveTotals | None:
    """The poll's live totals, or None when there is no such poll or it is hidden."""
    return polls_live_totals(poll_ids=[poll_id]).get(poll_id)


def polls_live_totals(*, poll_ids: Iterable[int]) -> dict[int, LiveTotals]:
    """Live totals of those of the polls that exist and are not hidden, in one query."""
    return {
        poll_id: _live_totals(poll, options)
        for poll_id, (poll, options) in _visible_polls_with_options(poll_ids).items()
    }


def poll_ids_deadline_passed(*, after: datetime, until: datetime) -> list[int]:
    """Visible polls, open by their status, whose closes_at fell in (after, until]."""
    return list(
        Poll.objects.filter(hidden=False, status=Poll.Status.OPEN, closes_at__gt=after, closes_at__lte=until)
        .order_by()
        .values_list("pk", flat=True)
    )


def viewer_sees_results(*, totals: LiveTotals, voter: Voter) -> bool:
    """Whether this viewer may see the counts that `totals.public` holds back."""
    if totals.full is None:
        return True
    # Only an open after-vote poll shows its counts to some viewers and not to others.
    if totals.public["results_visibility"] != Poll.Visibility.AFTER_VOTE:
        return False
    return voter_has_voted(poll_id=totals.public["id"], voter=voter)


def poll_totals_for_viewer(*, poll_id: int, voter: Voter | None) -> dict[str, Any] | None:
    """The poll's fresh totals as this viewer may see them (None: no such poll, or hidden)."""
    live = poll_live_totals(poll_id=poll_id)
    if live is None:
        return None
    if live.full is not None and voter is not None and viewer_sees_results(totals=live, voter=voter):
        return live.full
    return live.public


def polls_newest_public_totals(*, limit: int) -> list[dict[str, Any]]:
    """The public live totals of the newest visible polls, newest first."""
    polls = _visible_polls().order_by("-created_at", "-id")[:limit]
    return [_live_totals(poll).public for poll in polls]
