from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from polls.domain.exceptions import IdempotencyKeyReused, InvalidChoices, OptionOutOfRange, PollClosed, PollNotFound
from polls.domain.idempotency import choice_fingerprint, idempotency_scope
from polls.domain.services import counters_verify, poll_create, poll_set_status, vote_cast, votes_apply
from polls.domain.voters import Voter
from polls.kafka.bus import reset_vote_bus
from polls.models import AuditEntry, Option, Poll, Vote
from polls.tests.factories import counts, make_poll, vote_event

pytestmark = pytest.mark.django_db


def test_poll_create_numbers_options_from_one():
    poll = poll_create(question="Lunch?", options=["Soup", "Salad"])
    assert [(o.position, o.text, o.votes) for o in poll.options.order_by("position")] == [
        (1, "Soup", 0),
        (2, "Salad", 0),
    ]
    assert poll.status == Poll.Status.OPEN


def test_votes_apply_counts_each_vote_once_per_option():
    poll = make_poll()
    result = votes_apply(events=[vote_event(poll, 1), vote_event(poll, 3), vote_event(poll, 3)])
    assert (result.applied, result.duplicates, result.rejected) == (3, 0, [])
    assert result.poll_ids == {poll.pk}
    assert counts(poll) == [1, 0, 2, 0]
    assert Vote.objects.filter(poll=poll).count() == 3


def test_the_same_batch_applied_twice_is_counted_once():
    poll = make_poll()
    batch = [vote_event(poll, 2) for _ in range(50)]
    votes_apply(events=batch)
    again = votes_apply(events=batch)
    assert (again.applied, again.duplicates) == (0, 50)
    assert again.poll_ids == set()
    assert counts(poll) == [0, 50, 0, 0]


def test_a_vote_repeated_inside_one_batch_is_counted_once():
    poll = make_poll()
    event = vote_event(poll, 4)
    result = votes_apply(events=[event, event, event])
    assert (result.applied, result.duplicates) == (1, 2)
    assert counts(poll) == [0, 0, 0, 1]


def test_votes_for_a_missing_poll_or_option_are_rejected_not_counted():
    poll = make_poll(options=("Yes", "No"))
    events = [
        vote_event(poll, 3),
        vote_event(987654, 1),
        vote_event(poll, 1),
        vote_event(poll, 2, 3),
        vote_event(poll, 3, 2),
    ]
    result = votes_apply(events=events)
    assert result.applied == 1
    assert [(event, reason) for event, reason in result.rejected] == [
        (events[0], f"poll {poll.pk} has no option 3"),
        (events[1], "poll 987654 has no option 1"),
        (events[3], f"poll {poll.pk} has no option 3"),  # a ballot is counted whole or not at all
        (events[4], f"poll {poll.pk} has no option 3"),
    ]
    assert counts(poll) == [1, 0]
    assert Vote.objects.count() == 1


def test_each_applied_batch_grows_the_poll_version():
    poll = make_poll()
    votes_apply(events=[vote_event(poll, 1)])
    votes_apply(events=[vote_event(poll, 2), vote_event(poll, 2)])
    duplicate = vote_event(poll, 1)
    votes_apply(events=[duplicate])
    versions = [Poll.objects.get(pk=poll.pk).version]
    votes_apply(events=[duplicate])  # nothing new: the version stays
    versions.append(Poll.objects.get(pk=poll.pk).version)
    assert versions == [3, 3]


def test_closing_a_closed_poll_or_reopening_an_open_one_changes_nothing():
    """Each repeat used to write an audit entry, grow the version and broadcast."""
    poll = make_poll()
    poll_set_status(poll=poll, status=Poll.Status.OPEN)  # open already
    poll_set_status(poll=poll, status=Poll.Status.CLOSED)
    poll_set_status(poll=Poll.objects.get(pk=poll.pk), status=Poll.Status.CLOSED)
    assert list(AuditEntry.objects.values_list("action", flat=True)) == ["close"]
    assert Poll.objects.get(pk=poll.pk).version == 1
    # Open by its status but past its deadline: a reopen is a change (the deadline goes).
    Poll.objects.filter(pk=poll.pk).update(status=Poll.Status.OPEN, closes_at=timezone.now() - timedelta(minutes=1))
    reopened = poll_set_status(poll=Poll.objects.get(pk=poll.pk), status=Poll.Status.OPEN)
    assert (reopened.status, reopened.closes_at, reopened.version) == ("open", None, 2)
    assert list(AuditEntry.objects.order_by("id").values_list("action", flat=True)) == ["close", "reopen"]


def test_each_batch_adds_its_new_choices_to_the_polls_kept_total():
    """The leaderboard of polls and the list ordered by total read the kept total."""
    red, blue = make_poll(), make_poll()
    seen = vote_event(red, 1)
    votes_apply(events=[seen, vote_event(red, 2), vote_event(blue, 3), vote_event(red, 1, 4)])
    votes_apply(events=[seen, vote_event(blue, 3)])  # one redelivered, one new
    assert Poll.objects.get(pk=red.pk).total == sum(counts(red)) == 4  # a ballot of two choices counts two
    assert Poll.objects.get(pk=blue.pk).total == sum(counts(blue)) == 2
    red.options.get(position=4).delete()  # its vote row goes with it, and from the total
    assert Poll.objects.get(pk=red.pk).total == sum(counts(red)) == 3
    assert counters_verify() == []


VOTER = Voter(user_id=None, token_id="t0ken", address_key="abc")


def test_vote_cast_refuses_unknown_polls_closed_polls_and_options_out_of_range(settings):
    settings.KAFKA_BROKERS = []  # the in-process bus: anything published would be counted
    poll = make_poll(options=("Yes", "No"))
    with pytest.raises(PollNotFound):
        vote_cast(poll_id=poll.pk + 1000, options=[1], voter=VOTER)
    with pytest.raises(OptionOutOfRange, match="Option 3 does not exist: this poll has options 1 to 2"):
        vote_cast(poll_id=poll.pk, options=[3], voter=VOTER)
    with pytest.raises(OptionOutOfRange):
        vote_cast(poll_id=poll.pk, options=[0], voter=VOTER)
    with pytest.raises(InvalidChoices, match="At most 1 option may be chosen"):
        vote_cast(poll_id=poll.pk, options=[1, 2], voter=VOTER)
    Poll.objects.filter(pk=poll.pk).update(status=Poll.Status.CLOSED)
    with pytest.raises(PollClosed):
        vote_cast(poll_id=poll.pk, options=[1], voter=VOTER)
    Poll.objects.filter(pk=poll.pk).update(status=Poll.Status.OPEN, hidden=True)
    with pytest.raises(PollNotFound):
        vote_cast(poll_id=poll.pk, options=[1], voter=VOTER)
    assert Vote.objects.count() == 0


def test_an_idempotency_key_is_scoped_to_the_voter_and_bound_to_its_choice(settings):
    settings.KAFKA_BROKERS = []  # the in-process bus: a ballot returned is counted
    reset_vote_bus()
    poll = poll_create(question="Up to two", options=["a", "b", "c"], max_choices=2)
    user = Voter(user_id=7, token_id="t0ken", address_key="abc")
    tokenless = Voter(user_id=None, token_id=None, address_key="abc")
    new_token = Voter(user_id=None, token_id="fresh", address_key="abc", token_is_new=True)
    assert [idempotency_scope(v) for v in (user, VOTER, tokenless, new_token)] == [
        "user:7",
        "voter:t0ken",
        "ip:abc",
        "ip:abc",
    ]
    assert choice_fingerprint([3, 1]) == choice_fingerprint([1, 3]) != choice_fingerprint([1])

    first = vote_cast(poll_id=poll.pk, options=[1, 3], voter=VOTER, idempotency_key="k")
    # Another voter's "k" is another ballot; the same voter's is the first one again.
    other = vote_cast(poll_id=poll.pk, options=[2], voter=user, idempotency_key="k")
    again = vote_cast(poll_id=poll.pk, options=[3, 1], voter=VOTER, idempotency_key="k")
    assert other.vote_id != first.vote_id == again.vote_id
    with pytest.raises(IdempotencyKeyReused):
        vote_cast(poll_id=poll.pk, options=[1], voter=VOTER, idempotency_key="k")
    # A first vote that was given a new token: its retry with that token is the same ballot.
    cast = vote_cast(poll_id=poll.pk, options=[2], voter=new_token, idempotency_key="k2")
    retried = vote_cast(
        poll_id=poll.pk,
        options=[2],
        voter=Voter(user_id=None, token_id="fresh", address_key="abc"),
        idempotency_key="k2",
    )
    assert (retried.vote_id, retried.voter_key) == (cast.vote_id, "voter:fresh")
    assert counts(poll) == [1, 2, 1]
    reset_vote_bus()


def test_verify_counts_reports_and_repairs_a_wrong_counter(capsys):
    poll = make_poll()
    votes_apply(events=[vote_event(poll, 1), vote_event(poll, 1)])
    assert counters_verify() == []
    Option.objects.filter(poll=poll, position=1).update(votes=5)
    with pytest.raises(CommandError, match="1 counter"):
        call_command("verify_counts")
    assert f"poll {poll.pk} option 1: counter 5, vote rows 2" in capsys.readouterr().out
    call_command("verify_counts", "--repair")
    assert counts(poll) == [2, 0, 0, 0]
    assert counters_verify() == []
    # The poll's kept total too (the leaderboard of polls ranks by it).
    Poll.objects.filter(pk=poll.pk).update(total=7)
    with pytest.raises(CommandError, match="1 counter"):
        call_command("verify_counts")
    assert f"poll {poll.pk} total: 7, vote rows 2" in capsys.readouterr().out
    call_command("verify_counts", "--repair")
    assert Poll.objects.get(pk=poll.pk).total == 2
    assert counters_verify() == []
