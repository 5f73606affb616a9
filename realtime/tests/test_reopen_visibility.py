"""A poll that holds its counts back, closed and reopened: live viewers see the counts only while it is closed."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from polls.domain.services import poll_create, poll_set_status, votes_apply
from polls.models import Poll
from polls.tests.factories import vote_event
from realtime.tests.helpers import communicator, receive, receive_until, run


@pytest.mark.parametrize("visibility", [Poll.Visibility.AFTER_CLOSE, Poll.Visibility.AFTER_VOTE])
def test_a_reopened_poll_hides_its_counts_from_live_viewers_again(live, visibility):
    poll = poll_create(question="Held back?", options=("a", "b"), results_visibility=visibility)
    votes_apply(events=[vote_event(poll, 1), vote_event(poll, 2), vote_event(poll, 2)])

    async def scenario():
        stranger = communicator(f"/ws/polls/{poll.pk}")
        assert (await stranger.connect())[0]
        snapshot = await receive(stranger)
        await database_sync_to_async(poll_set_status)(poll=poll, status=Poll.Status.CLOSED)
        closed = (await receive_until(stranger, lambda m: m["status"] == "closed"))[-1]
        await database_sync_to_async(poll_set_status)(poll=poll, status=Poll.Status.OPEN)
        reopened = (await receive_until(stranger, lambda m: m["status"] == "open"))[-1]
        await stranger.disconnect()
        return snapshot, closed, reopened

    snapshot, closed, reopened = run(scenario)
    assert (snapshot["results_hidden"], snapshot["option1"], snapshot["total"]) == (True, None, None)
    assert (closed["results_hidden"], closed["option1"], closed["option2"], closed["total"]) == (False, 1, 2, 3)
    assert (reopened["results_hidden"], reopened["option1"], reopened["option2"], reopened["total"]) == (
        True,
        None,
        None,
        None,
    )
    assert [option["count"] for option in reopened["options"]] == [None, None]
