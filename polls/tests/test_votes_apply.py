"""votes_apply on PostgreSQL: the batch statements (one INSERT, one counter UPDATE) and their locks."""

import threading

import msgspec
import pytest
from django.db import connection
from django.db.models.signals import pre_delete
from django.test.utils import CaptureQueriesContext

from polls.domain import services
from polls.domain.services import counters_verify, poll_create, votes_apply
from polls.models import Option, Poll, Vote
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
    events = [msgspec.structs.replace(vote_event(poll, 1, dedupe_key=key or None), voter_key=key) for key in odd]
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


def _thread(call, results: list) -> threading.Thread:
    """A thread that appends call()'s result (or the exception it raised) to results, on a
    database connection of its own."""

    def run() -> None:
        try:
            results.append(call())
        except Exception as exc:  # noqa: BLE001 - the test asserts on it
            results.append(exc)
        finally:
            connection.close()

    return threading.Thread(target=run)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("deleting", ["poll", "option"])
def test_a_deletion_while_a_batch_holds_the_options_waits_and_its_cascade_takes_the_batch_rows(monkeypatch, deleting):
    """The vote rows have no foreign key: the deletion's lock on the options makes it wait."""
    poll, kept = make_poll(), make_poll(question="Kept?")
    first = poll.options.get(position=1)
    inside, release = threading.Event(), threading.Event()
    counters_add = services._counters_add

    def held(*, counts):  # the batch stops after its inserts, before its commit
        counters_add(counts=counts)
        inside.set()
        release.wait(30)

    monkeypatch.setattr(services, "_counters_add", held)
    applied, deleted = [], []
    applier = _thread(
        lambda: votes_apply(events=[vote_event(poll, 1), vote_event(poll, 2), vote_event(kept, 1)]), applied
    )
    applier.start()
    assert inside.wait(30)
    deleter = _thread(Poll.objects.get(pk=poll.pk).delete if deleting == "poll" else first.delete, deleted)
    deleter.start()
    deleter.join(0.5)
    assert deleter.is_alive(), "the deletion did not wait for the batch holding the poll's options"
    release.set()
    applier.join(30)
    deleter.join(30)
    assert applied[0].applied == 3
    if deleting == "poll":
        assert deleted[0][1].get("polls.Vote") == 2  # the batch's rows went with their poll
        assert list(Vote.objects.values_list("poll_id", flat=True)) == [kept.pk]
    else:
        assert deleted[0][1].get("polls.Vote") == 1  # the batch's row for that option went with it
        assert sorted(Vote.objects.values_list("option_id", flat=True)) == sorted(
            [poll.options.get(position=2).pk, kept.options.get(position=1).pk]
        )
    assert not Vote.objects.filter(option_id=first.pk).exists()
    assert counters_verify() == []


@pytest.mark.parametrize("deleting", ["poll", "option"])
def test_a_deletion_locks_the_options_of_its_poll_with_one_statement(deleting):
    poll = make_poll()
    target = Poll.objects.get(pk=poll.pk) if deleting == "poll" else poll.options.get(position=2)
    with CaptureQueriesContext(connection) as queries:
        target.delete()
    locks = [q["sql"] for q in queries if q["sql"].endswith("FOR UPDATE")]
    assert len(locks) == 1, locks
    # In id order (the first column, the id), like the batches' lock.
    assert (
        locks[0] == 'SELECT "polls_option"."id" AS "id" FROM "polls_option" '
        f'WHERE "polls_option"."poll_id" = {poll.pk} ORDER BY 1 ASC FOR UPDATE'
    )


def test_a_bulk_deletion_locks_the_options_of_all_its_polls_with_one_statement_and_deletes_them():
    polls = [make_poll(question=f"Poll {n}?") for n in range(3)]
    kept = make_poll(question="Kept?")
    votes_apply(events=[vote_event(poll, 1) for poll in polls + [kept]])
    with CaptureQueriesContext(connection) as queries:
        deleted, by_model = Poll.objects.filter(pk__in=[poll.pk for poll in polls]).delete()
    locks = [q["sql"] for q in queries if q["sql"].endswith("FOR UPDATE")]
    assert len(locks) == 1, locks
    assert locks[0].startswith(
        'SELECT "polls_option"."id" AS "id" FROM "polls_option" WHERE "polls_option"."poll_id" IN (SELECT'
    )
    assert locks[0].endswith("ORDER BY 1 ASC FOR UPDATE")
    assert (by_model["polls.Poll"], by_model["polls.Option"], by_model["polls.Vote"]) == (3, 12, 3)
    assert list(Poll.objects.values_list("pk", flat=True)) == [kept.pk]
    assert list(Vote.objects.values_list("poll_id", flat=True)) == [kept.pk]


def test_a_bulk_deletion_of_options_of_several_polls_locks_their_options_with_one_statement():
    polls = [make_poll(question=f"Poll {n}?") for n in range(2)]
    votes_apply(events=[vote_event(poll, position) for poll in polls for position in (1, 2)])
    with CaptureQueriesContext(connection) as queries:
        deleted, by_model = Option.objects.filter(poll__in=polls, position=2).delete()
    locks = [q["sql"] for q in queries if q["sql"].endswith("FOR UPDATE")]
    assert len(locks) == 1, locks
    assert locks[0].endswith("ORDER BY 1 ASC FOR UPDATE")
    assert (by_model["polls.Option"], by_model["polls.Vote"]) == (2, 2)
    assert sorted(Vote.objects.values_list("option_id", flat=True)) == sorted(
        poll.options.get(position=1).pk for poll in polls
    )
    assert counters_verify() == []


@pytest.mark.django_db(transaction=True)
def test_a_bulk_deletion_and_a_batch_spanning_its_polls_take_turns_without_a_deadlock():
    """The cascade visits the polls in id order and a batch their options in id order;
    with options added to the older poll later, the two orders differ."""
    older = Poll.objects.create(question="Older?")
    newer = make_poll(question="Newer?")
    for position in (1, 2):
        Option.objects.create(poll=older, position=position, text=f"Option {position}")
    assert min(older.options.values_list("id", flat=True)) > max(newer.options.values_list("id", flat=True))
    inside, release = threading.Event(), threading.Event()

    def hold(sender, instance, **kwargs):  # after the locking receiver, at the cascade's first poll
        if not inside.is_set():
            inside.set()
            release.wait(30)

    pre_delete.connect(hold, sender=Poll, dispatch_uid="test.hold_bulk_deletion")
    applied, deleted = [], []
    try:
        deleter = _thread(Poll.objects.filter(pk__in=[older.pk, newer.pk]).delete, deleted)
        deleter.start()
        assert inside.wait(30)
        applier = _thread(lambda: votes_apply(events=[vote_event(newer, 1), vote_event(older, 1)]), applied)
        applier.start()
        applier.join(0.5)
        assert applier.is_alive(), "the batch did not wait for the deletion holding the polls' options"
        release.set()
        deleter.join(30)
        applier.join(30)
    finally:
        release.set()
        pre_delete.disconnect(sender=Poll, dispatch_uid="test.hold_bulk_deletion")
    # Poll by poll, the deletion held the older poll's options while the batch took the
    # newer one's and waited: PostgreSQL found the deadlock and aborted one of the two.
    assert [type(result) for result in deleted + applied] == [tuple, services.AppliedBatch], deleted + applied
    assert deleted[0][1]["polls.Poll"] == 2
    assert applied[0].applied == 0
    assert sorted(reason for _, reason in applied[0].rejected) == sorted(
        [f"poll {newer.pk} has no option 1", f"poll {older.pk} has no option 1"]
    )
    assert not Vote.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_batch_for_a_poll_being_deleted_waits_for_the_deletion_and_rejects_its_votes():
    poll = make_poll()
    inside, release = threading.Event(), threading.Event()

    def hold(sender, instance, **kwargs):  # runs after the receiver that locks the options
        inside.set()
        release.wait(30)

    pre_delete.connect(hold, sender=Poll, dispatch_uid="test.hold_deletion")
    applied = []
    try:
        deleter = _thread(Poll.objects.get(pk=poll.pk).delete, [])
        deleter.start()
        assert inside.wait(30)
        applier = _thread(lambda: votes_apply(events=[vote_event(poll, 1)]), applied)
        applier.start()
        applier.join(0.5)
        assert applier.is_alive(), "the batch did not wait for the deletion holding the poll's options"
        release.set()
        deleter.join(30)
        applier.join(30)
    finally:
        release.set()
        pre_delete.disconnect(sender=Poll, dispatch_uid="test.hold_deletion")
    assert applied[0].applied == 0
    assert [reason for _, reason in applied[0].rejected] == [f"poll {poll.pk} has no option 1"]
    assert not Poll.objects.filter(pk=poll.pk).exists()
    assert not Vote.objects.exists()
