"""votes_apply on PostgreSQL: the batch statements (one INSERT, one counter UPDATE) and their locks."""

import dataclasses
import threading
import uuid

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from polls.models import Option, Poll, Vote
from polls.services import counters_verify, poll_create, votes_apply
from polls.tests.factories import counts, make_poll, vote_event

pytestmark = pytest.mark.django_db


def test_a_batch_over_many_polls_updates_all_their_counters_in_one_statement():
    polls = [poll_create(question=f"Poll {n}?", options=[f"Option {k}" for k in range(1, 7)]) for n in range(30)]
    events = [vote_event(poll, 1 + (n + k) % 6) for n, poll in enumerate(polls) for k in range(n % 6 + 1)]
    with CaptureQueriesContext(connection) as queries:
        result = votes_apply(events=events)
    counter_updates = [q["sql"] for q in queries if q["sql"].startswith('UPDATE "polls_option"')]
    assert len(counter_updates) == 1
    assert result.applied == len(events) and result.poll_ids == {poll.pk for poll in polls}
    for n, poll in enumerate(polls):
        assert sum(counts(poll)) == n % 6 + 1
        assert Poll.objects.get(pk=poll.pk).version == 1
    assert counters_verify() == []


def test_duplicates_and_multiple_choice_ballots_in_one_batch_count_each_choice_once():
    poll = poll_create(question="Pick up to three", options=["A", "B", "C", "D"], max_choices=3)
    applied_before = vote_event(poll, 1, 2)
    votes_apply(events=[applied_before])
    repeated = vote_event(poll, 2, 3, 4)
    batch = [repeated, vote_event(poll, 4), applied_before, repeated, vote_event(poll, 1, 4)]
    result = votes_apply(events=batch)
    assert (result.applied, result.duplicates) == (3, 2)
    assert counts(poll) == [2, 2, 1, 3]
    assert Vote.objects.filter(ballot_id=repeated.vote_id).count() == 3
    again = votes_apply(events=batch)
    assert (again.applied, again.duplicates) == (0, 5)
    assert counts(poll) == [2, 2, 1, 3]
    assert counters_verify() == []


def test_one_ballot_per_voter_holds_inside_one_batch_for_all_its_choices():
    poll = poll_create(question="Pick two", options=["A", "B", "C"], max_choices=2, one_vote_per="voter")
    first = vote_event(poll, 1, 2, dedupe_key="voter-1")
    second = vote_event(poll, 2, 3, dedupe_key="voter-1")
    other = vote_event(poll, 3, dedupe_key="voter-2")
    result = votes_apply(events=[first, second, other])
    assert (result.applied, result.duplicates) == (2, 1)
    assert counts(poll) == [1, 1, 1]
    assert not Vote.objects.filter(ballot_id=second.vote_id).exists()


def test_keys_with_quotes_commas_braces_and_backslashes_are_stored_as_sent():
    poll = make_poll()
    odd = ['ip:"1,2"', "{a,b}", "back\\slash", "NULL", "", "é ü 🗳", "  spaced  "]
    events = [dataclasses.replace(vote_event(poll, 1, dedupe_key=key or None), voter_key=key) for key in odd]
    assert votes_apply(events=events).applied == len(odd)
    stored = dict(Vote.objects.values_list("vote_id", "voter_key"))
    assert [stored[event.vote_id] for event in events] == odd
    assert sorted(filter(None, Vote.objects.values_list("dedupe_key", flat=True))) == sorted(filter(None, odd))


@pytest.mark.django_db(transaction=True)
def test_two_workers_applying_overlapping_batches_at_once_neither_deadlock_nor_miscount():
    """As in a rebalance: both apply the same batches, their votes in opposite orders."""
    polls = [make_poll(question=f"Shared {n}?") for n in range(12)]
    batches = [[vote_event(poll, 1 + k % 4) for poll in polls for k in range(5)] for _ in range(8)]
    errors: list[Exception] = []

    def apply(order: int) -> None:
        try:
            for batch in batches:
                votes_apply(events=batch[::order])
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=apply, args=(order,)) for order in (1, -1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert sum(Option.objects.filter(poll__in=polls).values_list("votes", flat=True)) == 8 * 12 * 5
    assert Vote.objects.count() == 8 * 12 * 5
    assert counters_verify() == []


def test_a_batch_without_conflicts_is_copied_and_one_with_a_conflict_skips_only_what_was_applied():
    poll = make_poll()
    fresh = [vote_event(poll, 1), vote_event(poll, 2)]
    with CaptureQueriesContext(connection) as queries:
        assert votes_apply(events=fresh).applied == 2
    assert not [q for q in queries if q["sql"].startswith('INSERT INTO "polls_vote"')]  # COPY, not INSERT
    mixed = [fresh[1], vote_event(poll, 3), vote_event(poll, 3)]
    with CaptureQueriesContext(connection) as queries:
        result = votes_apply(events=mixed)
    assert [q for q in queries if "ON CONFLICT DO NOTHING" in q["sql"]]
    assert (result.applied, result.duplicates) == (2, 1)
    assert counts(poll) == [1, 1, 2, 0]
    assert Vote.objects.count() == 4
    assert counters_verify() == []


def test_a_vote_row_must_name_an_option_of_its_own_poll():
    poll, other = make_poll(), make_poll(question="Another?")
    with pytest.raises(IntegrityError), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        Vote.objects.create(
            vote_id=uuid.uuid4(), ballot_id=uuid.uuid4(), poll=poll, option=other.options.get(position=1),
            voter_key="test", cast_at=timezone.now(),
        )
    assert not Vote.objects.exists()
