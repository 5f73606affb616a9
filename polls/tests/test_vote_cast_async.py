"""vote_cast_async: the lean path's vote, checked and published without blocking the loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from polls.domain import services
from polls.domain.exceptions import AlreadyVoted, OptionOutOfRange
from polls.domain.selectors import poll_vote_target
from polls.domain.services import poll_create, vote_cast_async
from polls.domain.voters import Voter
from polls.kafka.bus import KafkaVoteBus
from polls.kafka.errors import VoteBusUnavailable
from polls.kafka.events import VoteEvent
from polls.tests.factories import make_poll
from testsupport.kafka import read_topic

pytestmark = pytest.mark.django_db(transaction=True)

VOTER = Voter(user_id=None, token_id="t0ken", address_key="abc")


def cast(poll_id: int, *options: int, **kwargs) -> VoteEvent:
    return asyncio.run(vote_cast_async(poll_id=poll_id, options=list(options), voter=VOTER, **kwargs))


@pytest.fixture
def off_loop_checks(monkeypatch):
    """What ran on an executor thread, by name (everything else ran on the loop)."""
    ran = []
    then_release = services._then_release

    def counted(function):
        call = then_release(function)

        def counted_call(*args, **kwargs):
            ran.append(function.__name__)
            return call(*args, **kwargs)

        return counted_call

    monkeypatch.setattr(services, "_then_release", counted)
    return ran


def test_a_ballot_for_a_cached_poll_is_checked_on_the_loop_and_acknowledged_by_kafka(kafka_topic, off_loop_checks):
    poll = make_poll()
    event = cast(poll.pk, 2)  # not cached yet: read on a thread
    assert off_loop_checks == ["_vote_check"]
    # Cached now: checked on the loop, where any database access would raise
    # SynchronousOnlyOperation, and published before the call returns.
    second = cast(poll.pk, 3)
    with pytest.raises(OptionOutOfRange):
        cast(poll.pk, 5)
    assert off_loop_checks == ["_vote_check"]
    published = [VoteEvent.from_bytes(message.value) for message in read_topic(kafka_topic)]
    assert [(e.vote_id, e.options) for e in published] == [(event.vote_id, (2,)), (second.vote_id, (3,))]


def test_ballots_that_need_the_database_are_checked_off_the_loop(in_process_bus, off_loop_checks):
    once = poll_create(question="Once?", options=["a", "b"], one_vote_per="voter")
    poll = make_poll()
    poll_vote_target(poll_id=once.pk)
    poll_vote_target(poll_id=poll.pk)
    cast(once.pk, 1)
    with pytest.raises(AlreadyVoted):
        cast(once.pk, 2)
    first = cast(poll.pk, 1, idempotency_key="retry-1")
    assert cast(poll.pk, 1, idempotency_key="retry-1").vote_id == first.vote_id
    assert off_loop_checks == ["_vote_check", "_vote_check", "_keyed_check", "_keyed_check"]


def test_without_an_acknowledgement_the_vote_is_refused_within_the_budget(settings):
    settings.KAFKA_BROKERS = ["127.0.0.1:9"]  # nothing listens there
    poll = make_poll()
    poll_vote_target(poll_id=poll.pk)
    bus = KafkaVoteBus(timeout=0.5)
    event = services._ballot(services.uuid.uuid4(), poll.pk, (1,), VOTER.key, None)
    started = time.monotonic()
    with pytest.raises(VoteBusUnavailable):
        asyncio.run(bus.publish_async(event))
    assert time.monotonic() - started < 3
    bus.close()
