"""The vote target cache: a hot poll's votes skip the SELECT, changes in this process count at once.

These tests commit for real (transaction=True): what is read inside a transaction, as in
the suite's ordinary rolled-back tests, is never cached.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from polls.domain import selectors
from polls.domain.exceptions import OptionOutOfRange, PollClosed, PollNotFound
from polls.domain.selectors import poll_vote_target, vote_target_forget
from polls.domain.services import poll_set_hidden, poll_set_status, vote_cast
from polls.domain.voters import Voter
from polls.models import Option, Poll
from polls.tests.factories import make_poll

pytestmark = pytest.mark.django_db(transaction=True)

VOTER = Voter(user_id=None, token_id=None, address_key="test")


@pytest.fixture(autouse=True)
def fresh_cache(settings):
    settings.VOTE_TARGET_CACHE_SECONDS = 60.0
    vote_target_forget()
    yield
    vote_target_forget()


def selects(poll_id: int) -> int:
    """How many statements one vote target lookup sends."""
    with CaptureQueriesContext(connection) as queries:
        poll_vote_target(poll_id=poll_id)
    return len(queries)


def test_a_second_vote_within_the_max_age_sends_no_query():
    poll = make_poll()
    assert selects(poll.pk) == 1
    assert selects(poll.pk) == 0
    assert poll_vote_target(poll_id=poll.pk).option_count == 4


def test_max_age_zero_reads_on_every_vote(settings):
    settings.VOTE_TARGET_CACHE_SECONDS = 0
    poll = make_poll()
    assert [selects(poll.pk) for _ in range(3)] == [1, 1, 1]


def test_the_copy_expires_after_the_max_age(settings, monkeypatch):
    settings.VOTE_TARGET_CACHE_SECONDS = 1.0
    poll = make_poll()
    now = [1000.0]
    monkeypatch.setattr(selectors.time, "monotonic", lambda: now[0])
    assert selects(poll.pk) == 1
    now[0] += 0.9
    assert selects(poll.pk) == 0
    now[0] += 0.2
    assert selects(poll.pk) == 1


def test_closing_or_hiding_through_the_services_counts_at_once():
    poll = make_poll()
    assert poll_vote_target(poll_id=poll.pk).is_open
    poll_set_status(poll=poll, status=Poll.Status.CLOSED)
    with pytest.raises(PollClosed):
        vote_cast(poll_id=poll.pk, options=[1], voter=VOTER)
    poll_set_status(poll=poll, status=Poll.Status.OPEN)
    assert poll_vote_target(poll_id=poll.pk).is_open
    poll_set_hidden(poll=poll, hidden=True)
    with pytest.raises(PollNotFound):
        vote_cast(poll_id=poll.pk, options=[1], voter=VOTER)
    poll_set_hidden(poll=poll, hidden=False)
    assert poll_vote_target(poll_id=poll.pk).is_open


def test_saving_or_deleting_a_poll_or_an_option_counts_at_once():
    poll = make_poll()
    assert poll_vote_target(poll_id=poll.pk).max_choices == 1
    poll.max_choices = 2
    poll.save()  # the admin's form saves this way
    assert poll_vote_target(poll_id=poll.pk).max_choices == 2
    Option.objects.get(poll=poll, position=4).delete()
    with pytest.raises(OptionOutOfRange):
        vote_cast(poll_id=poll.pk, options=[4], voter=VOTER)
    Option.objects.create(poll=poll, position=4, text="Yellow again")
    assert poll_vote_target(poll_id=poll.pk).option_count == 4
    poll_id = poll.pk
    poll.delete()
    with pytest.raises(PollNotFound):
        poll_vote_target(poll_id=poll_id)


def test_a_deadline_passing_closes_a_cached_poll_without_a_read(settings):
    poll = make_poll()
    Poll.objects.filter(pk=poll.pk).update(closes_at=timezone.now() + timedelta(milliseconds=300))
    target = poll_vote_target(poll_id=poll.pk)
    assert target.is_open and target.closes_at is not None
    Poll.objects.filter(pk=poll.pk).update(closes_at=target.closes_at - timedelta(milliseconds=300))
    assert selects(poll.pk) == 0
    # The clock is compared on every vote, so the cached deadline still closes it.
    while timezone.now() <= target.closes_at:
        pass
    with pytest.raises(PollClosed):
        vote_cast(poll_id=poll.pk, options=[1], voter=VOTER)


def test_a_change_that_bypasses_the_models_is_seen_when_the_copy_expires(settings, monkeypatch):
    """The staleness the cache allows: a change this process is not told of (another
    process's close, a raw UPDATE) counts only once the copy is VOTE_TARGET_CACHE_SECONDS old."""
    settings.VOTE_TARGET_CACHE_SECONDS = 1.0
    now = [1000.0]
    monkeypatch.setattr(selectors.time, "monotonic", lambda: now[0])
    poll = make_poll()
    poll_vote_target(poll_id=poll.pk)
    Poll.objects.filter(pk=poll.pk).update(status=Poll.Status.CLOSED)
    assert poll_vote_target(poll_id=poll.pk).is_open
    now[0] += 1.0
    assert not poll_vote_target(poll_id=poll.pk).is_open


def test_unknown_and_hidden_polls_are_not_cached():
    poll = make_poll()
    Poll.objects.filter(pk=poll.pk).update(hidden=True)
    with pytest.raises(PollNotFound):
        poll_vote_target(poll_id=poll.pk)
    Poll.objects.filter(pk=poll.pk).update(hidden=False)
    assert poll_vote_target(poll_id=poll.pk).is_open


def test_what_is_read_inside_a_transaction_is_not_cached():
    with transaction.atomic():
        poll = make_poll()
        poll_vote_target(poll_id=poll.pk)
        assert poll.pk not in selectors._vote_targets
        transaction.set_rollback(True)
    with pytest.raises(PollNotFound):
        poll_vote_target(poll_id=poll.pk)


def test_a_change_committed_while_the_select_ran_keeps_its_old_result_out(monkeypatch):
    poll = make_poll()
    read = selectors._vote_target_read

    def read_then_closed_elsewhere(poll_id):
        target = read(poll_id)  # the open poll, read just before ...
        poll_set_status(poll=Poll.objects.get(pk=poll_id), status=Poll.Status.CLOSED)  # ... it closes
        return target

    monkeypatch.setattr(selectors, "_vote_target_read", read_then_closed_elsewhere)
    assert poll_vote_target(poll_id=poll.pk).is_open
    monkeypatch.setattr(selectors, "_vote_target_read", read)
    assert not poll_vote_target(poll_id=poll.pk).is_open


def test_a_change_is_forgotten_again_when_it_commits():
    """A vote that reads the old row between the change and its commit does not keep it."""
    poll = make_poll()
    with transaction.atomic():
        poll_set_status(poll=poll, status=Poll.Status.CLOSED)
        # Another request, outside this transaction, reads the committed (still open) row.
        open_target = selectors.VoteTarget(poll.pk, Poll.Status.OPEN, None, Poll.OneVotePer.NONE, 1, 4)
        selectors._vote_targets[poll.pk] = (float("inf"), open_target)
    assert not poll_vote_target(poll_id=poll.pk).is_open


def test_the_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(selectors, "_VOTE_TARGETS_MAX", 2)
    polls = [make_poll(f"Q{n}?") for n in range(3)]
    for poll in polls:
        poll_vote_target(poll_id=poll.pk)
    assert len(selectors._vote_targets) <= 2
