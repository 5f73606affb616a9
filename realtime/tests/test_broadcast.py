"""Broadcasts after commit: coalesced per poll, read fresh, and surviving a Redis outage."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import timedelta

import pytest
import redis
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from django.db import transaction
from django.utils import timezone

from polls.domain.services import poll_create, votes_apply
from polls.models import Poll
from polls.tests.factories import counts, make_poll, vote_event
from realtime.broadcast import broadcast_polls_on_commit, get_broadcaster
from realtime.tests.helpers import apply_votes, communicator, drain, receive, receive_until, run


def _burst(poll, plan: list[int]) -> float:
    """Apply every vote as its own batch, as fast as the database allows; return the seconds taken."""
    started = time.monotonic()
    for option in plan:
        votes_apply(events=[vote_event(poll, option)])
    return time.monotonic() - started


def _coalesced_burst(poll, plan: list[int]):
    async def scenario():
        comm = communicator(f"/ws/polls/{poll.pk}")
        assert (await comm.connect())[0]
        snapshot = await receive(comm)
        duration = await database_sync_to_async(_burst)(poll, plan)
        assert await sync_to_async(get_broadcaster().flush)(10.0)
        messages = await drain(comm, quiet=1.0)
        await comm.disconnect()
        return snapshot, duration, messages

    return run(scenario)


@pytest.mark.parametrize("rate", [10.0, 4.0])
def test_a_burst_of_1000_votes_on_one_poll_is_coalesced_to_the_rate_and_the_last_message_is_exact(live, settings, rate):
    settings.BROADCAST_MAX_PER_SECOND = rate
    poll = make_poll()
    plan = [1 + (n * n + n // 7) % 4 for n in range(1000)]
    expected = Counter(plan)

    snapshot, duration, messages = _coalesced_burst(poll, plan)

    assert snapshot["total"] == 0
    assert messages, "the burst produced no update at all"
    assert {m["type"] for m in messages} == {"poll.updated"}
    # Sends are at least 1/rate apart from the first vote to a trailing send at most
    # 1/rate after the last: so at most duration * rate + 2 of them.
    bound = int(duration * rate) + 2
    assert len(messages) <= bound, f"{len(messages)} messages for a {duration:.2f} s burst at {rate}/s (bound {bound})"
    assert len(messages) < len(plan) / 2, "hardly coalesced at all"
    final = messages[-1]
    assert [final[f"option{n}"] for n in range(1, 5)] == [expected[n] for n in range(1, 5)] == counts(poll)
    assert final["total"] == 1000
    assert final["version"] == 1000  # one batch each
    # One vote per batch: every message's version must equal its total, which only a
    # read of the poll and its options from one snapshot guarantees.
    assert all(m["version"] == m["total"] for m in messages), [(m["version"], m["total"]) for m in messages]
    versions = [m["version"] for m in messages]
    assert versions == sorted(set(versions))


def test_broadcasts_are_sent_only_after_commit_and_never_for_a_rolled_back_batch(live):
    poll = make_poll()

    async def scenario():
        comm = communicator(f"/ws/polls/{poll.pk}")
        assert (await comm.connect())[0]
        await receive(comm)

        def rolled_back():
            with pytest.raises(RuntimeError), transaction.atomic():
                votes_apply(events=[vote_event(poll, 1)])
                raise RuntimeError("the batch fails after applying")

        await database_sync_to_async(rolled_back)()
        nothing = await drain(comm, quiet=1.0)
        await apply_votes(poll, 2)
        after = await receive_until(comm, lambda m: m["type"] == "poll.updated")
        await comm.disconnect()
        return nothing, after

    nothing, after = run(scenario)
    assert nothing == []
    assert (after[-1]["option1"], after[-1]["option2"], after[-1]["total"]) == (0, 1, 1)


def test_one_batch_touching_several_polls_broadcasts_each_once(live):
    first, second = make_poll("First?", ("a", "b")), make_poll("Second?", ("c", "d"))

    async def scenario():
        comm = communicator("/ws")
        assert (await comm.connect())[0]
        await receive(comm)
        events = [vote_event(first, 1), vote_event(second, 2), vote_event(second, 2)]
        await database_sync_to_async(votes_apply)(events=events)
        messages = await drain(comm, quiet=1.0)
        await comm.disconnect()
        return messages

    updates = [m for m in run(scenario) if m["type"] == "poll.updated"]
    assert sorted((m["id"], m["total"], m["version"]) for m in updates) == [(first.pk, 1, 1), (second.pk, 2, 1)]


def test_broadcast_polls_on_commit_outside_votes_apply_sends_current_totals(live):
    poll = make_poll()

    async def scenario():
        comm = communicator(f"/ws/polls/{poll.pk}")
        assert (await comm.connect())[0]
        await receive(comm)

        def touch():
            with transaction.atomic():
                broadcast_polls_on_commit(poll_ids=[poll.pk])

        await database_sync_to_async(touch)()
        message = await receive(comm)
        await comm.disconnect()
        return message

    message = run(scenario)
    assert message["type"] == "poll.updated" and message["total"] == 0 and message["version"] == 0


def test_with_redis_down_batches_apply_without_waiting_and_the_next_broadcast_heals(live, services):
    poll = make_poll()
    services.redis.stop()
    try:
        started = time.monotonic()
        for option in (1, 2, 3, 4) * 5:
            votes_apply(events=[vote_event(poll, option)])
        applying = time.monotonic() - started
        # The broadcaster thread keeps going through failed sends instead of dying, and
        # keeps the polls whose sends failed to send again.
        assert not get_broadcaster().flush(3.0)
        assert get_broadcaster()._thread.is_alive()
    finally:
        services.redis.start()
    assert get_broadcaster().flush(30.0), "the failed sends never went out once Redis was back"
    assert counts(poll) == [5, 5, 5, 5]
    # Nothing in the batch path waited for Redis (a send attempt alone may take up to
    # BROADCAST_SEND_TIMEOUT); generous, since this is no benchmark.
    assert applying < 10

    async def scenario():
        comm = communicator(f"/ws/polls/{poll.pk}")
        assert (await comm.connect())[0]
        snapshot = await receive(comm)
        # The broadcaster's own Redis connection reconnects by itself: keep voting until
        # an update gets through, as real traffic would.
        deadline = time.monotonic() + 30
        while True:
            await apply_votes(poll, 1)
            try:
                update = (await receive_until(comm, lambda m: m["type"] == "poll.updated", timeout=1.0))[-1]
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
        await comm.disconnect()
        return snapshot, update

    snapshot, update = run(scenario)
    assert snapshot["total"] == 20
    assert 20 < update["total"] <= sum(counts(poll))


def test_the_embedded_in_memory_layer_delivers_from_the_broadcaster_thread(live, settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    channel_layers.backends.clear()
    poll = make_poll()

    async def scenario():
        comm = communicator(f"/ws/polls/{poll.pk}")
        assert (await comm.connect())[0]
        await receive(comm)
        await apply_votes(poll, 4)
        update = (await receive_until(comm, lambda m: m["type"] == "poll.updated", timeout=5))[-1]
        await comm.disconnect()
        return update

    update = run(scenario)
    assert (update["option4"], update["total"], update["version"]) == (1, 1, 1)


def test_a_passing_deadline_reaches_the_viewers_and_shows_what_an_after_close_poll_held_back(live):
    """Nothing in the database changes when closes_at passes: before the broadcaster
    watched deadlines, viewers saw such a poll open, its counts hidden, until they
    reconnected."""
    closes_at = timezone.now() + timedelta(seconds=3)
    poll = poll_create(
        question="Reveal at the close?",
        options=("Yes", "No"),
        closes_at=closes_at,
        results_visibility=Poll.Visibility.AFTER_CLOSE,
    )
    votes_apply(events=[vote_event(poll, 1), vote_event(poll, 1), vote_event(poll, 2)])

    def closed(message) -> bool:
        return message["type"] == "poll.updated" and message.get("id") == poll.pk and message["status"] == "closed"

    async def scenario():
        one, every = communicator(f"/ws/polls/{poll.pk}"), communicator("/ws")
        assert (await one.connect())[0] and (await every.connect())[0]
        snapshot = await receive(one)
        await receive(every)
        await sync_to_async(get_broadcaster().watch_deadlines)()
        update = (await receive_until(one, closed, timeout=15))[-1]
        received_at = timezone.now()
        listed = (await receive_until(every, closed, timeout=5))[-1]
        await one.disconnect()
        await every.disconnect()
        return snapshot, update, received_at, listed

    snapshot, update, received_at, listed = run(scenario)
    assert (snapshot["status"], snapshot["results_hidden"], snapshot["option1"]) == ("open", True, None)
    assert received_at >= closes_at
    for message in (update, listed):
        assert (message["results_hidden"], message["option1"], message["option2"], message["total"]) == (False, 2, 1, 3)


def test_a_send_redis_refuses_goes_out_later_without_another_change(live, settings):
    """Before, a failed send was dropped and the next change was to heal the viewers:
    after a poll's last batch, none came, and the totals it had were remembered as sent,
    so even a later request for them was skipped as a repeat."""
    admin = redis.Redis.from_url(settings.REDIS_URL)
    poll = make_poll()

    async def scenario():
        comm = communicator(f"/ws/polls/{poll.pk}")
        assert (await comm.connect())[0]
        await receive(comm)
        # Redis refuses the broadcaster's PUBLISH; the viewer's subscription stays as it is.
        await sync_to_async(admin.execute_command)("ACL", "SETUSER", "default", "-publish")
        try:
            await apply_votes(poll, 3)
            await asyncio.sleep(1.5)  # the send failed, and its first retry too
            refused = await drain(comm, quiet=0.5)
        finally:
            await sync_to_async(admin.execute_command)("ACL", "SETUSER", "default", "+publish")
        update = (await receive_until(comm, lambda m: m["type"] == "poll.updated", timeout=10))[-1]
        await comm.disconnect()
        return refused, update

    refused, update = run(scenario)
    admin.close()
    assert refused == []
    assert (update["option3"], update["total"], update["version"]) == (1, 1, 1)
