"""The WebSocket endpoints through the project's ASGI application, over the real Redis layer."""

from __future__ import annotations

import asyncio
import json

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async

from polls.domain.live import poll_live_totals
from polls.domain.services import poll_create, poll_set_status, votes_apply
from polls.domain.voters import Voter, client_address_key, voter_token_issue
from polls.models import Poll
from polls.tests.factories import make_poll, vote_event
from realtime.broadcast import get_broadcaster
from realtime.consumers import CLOSE_BAD_MESSAGES, CLOSE_NOT_FOUND, CLOSE_TRY_AGAIN_LATER, connection_slots
from realtime.events import poll_group, poll_updated_layer_message
from realtime.tests.helpers import apply_votes, communicator, drain, receive, receive_until, run

SEED_KEYS = {"id", "question", "option1", "option2", "option3", "option4", "options", "total", "status", "version"}


def test_a_poll_socket_gets_the_poll_snapshot_first(live):
    poll = make_poll("Best editor?", ("vim", "emacs", "nano"))

    async def scenario():
        await apply_votes(poll, 1, 1, 3)
        comm = communicator(f"/ws/polls/{poll.pk}")
        connected, _ = await comm.connect()
        assert connected
        snapshot = await receive(comm)
        await comm.disconnect()
        return snapshot

    snapshot = run(scenario)
    assert snapshot["type"] == "poll.snapshot"
    assert snapshot["id"] == poll.pk
    assert snapshot["question"] == "Best editor?"
    assert (snapshot["option1"], snapshot["option2"], snapshot["option3"]) == (2, 0, 1)
    assert "option4" not in snapshot
    assert snapshot["options"] == [
        {"position": 1, "text": "vim", "count": 2},
        {"position": 2, "text": "emacs", "count": 0},
        {"position": 3, "text": "nano", "count": 1},
    ]
    assert snapshot["total"] == 3
    assert snapshot["version"] == 3
    assert snapshot["status"] == "open"


def test_votes_applied_by_the_worker_code_reach_the_poll_socket_with_growing_versions(live):
    poll = make_poll()

    async def scenario():
        comm = communicator(f"/ws/polls/{poll.pk}")
        assert (await comm.connect())[0]
        snapshot = await receive(comm)
        updates = []
        for option in (2, 2, 4):
            await apply_votes(poll, option)
            # Waiting for each one keeps the sends apart, whatever the rate limit folds.
            updates += await receive_until(comm, lambda m, n=len(updates): m["total"] > snapshot["total"] + n)  # noqa: B008 - binds this round's count
        await comm.disconnect()
        return snapshot, updates

    snapshot, updates = run(scenario)
    assert snapshot["total"] == 0 and snapshot["version"] == 0
    assert [m["type"] for m in updates] == ["poll.updated"] * len(updates)
    assert set(updates[-1]) >= SEED_KEYS
    assert [updates[-1][f"option{n}"] for n in range(1, 5)] == [0, 2, 0, 1]
    assert updates[-1]["total"] == 3
    versions = [m["version"] for m in updates]
    assert versions == sorted(set(versions)), f"versions must strictly grow: {versions}"
    assert versions[-1] == 3


def test_the_every_poll_socket_gets_a_snapshot_then_updates_of_any_poll_and_the_leaderboard(live):
    older = make_poll("Older?", ("a", "b"))
    newer = make_poll("Newer?", ("c", "d"))

    async def scenario():
        comm = communicator("/ws")
        assert (await comm.connect())[0]
        snapshot = await receive(comm)
        await apply_votes(older, 2)
        seen = await receive_until(comm, lambda m: m["type"] == "poll.updated" and m["id"] == older.pk)
        seen += await receive_until(comm, lambda m: m["type"] == "leaderboard.updated")
        await comm.disconnect()
        return snapshot, seen

    snapshot, seen = run(scenario)
    assert snapshot["type"] == "polls.snapshot"
    assert [p["id"] for p in snapshot["polls"]] == [newer.pk, older.pk]  # newest first
    assert snapshot["polls"][1]["option1"] == 0
    assert isinstance(snapshot["leaderboard"], list)
    update = next(m for m in seen if m["type"] == "poll.updated")
    assert (update["option1"], update["option2"], update["total"], update["version"]) == (0, 1, 1, 1)
    board = next(m for m in seen if m["type"] == "leaderboard.updated")["leaderboard"]
    assert board[0]["option"] == "b" and board[0]["count"] == 1 and board[0]["poll_id"] == older.pk


def test_a_poll_socket_only_hears_its_own_poll(live):
    watched, other = make_poll("Watched?", ("a", "b")), make_poll("Other?", ("c", "d"))

    async def scenario():
        comm = communicator(f"/ws/polls/{watched.pk}")
        assert (await comm.connect())[0]
        await receive(comm)
        await apply_votes(other, 1, 2)
        await apply_votes(watched, 1)
        messages = await receive_until(comm, lambda m: m["type"] == "poll.updated")
        messages += await drain(comm, quiet=0.5)
        await comm.disconnect()
        return messages

    messages = run(scenario)
    assert {m["id"] for m in messages} == {watched.pk}
    assert messages[-1]["option1"] == 1


def test_a_stale_update_is_not_forwarded(live, settings):
    poll = make_poll()

    async def scenario():
        await apply_votes(poll, 1, 1)
        assert await sync_to_async(get_broadcaster().flush)()  # the votes' own updates are out
        comm = communicator(f"/ws/polls/{poll.pk}")
        assert (await comm.connect())[0]
        snapshot = await receive(comm)
        stale = dict(snapshot, version=snapshot["version"] - 1, option1=1, total=1)
        stale.pop("type")
        await live.group_send(poll_group(poll.pk), poll_updated_layer_message(totals=stale))
        newer = dict(stale, version=snapshot["version"] + 1, option1=5, total=5)
        await live.group_send(poll_group(poll.pk), poll_updated_layer_message(totals=newer))
        messages = await drain(comm, quiet=1.0)
        await comm.disconnect()
        return messages

    messages = run(scenario)
    assert [(m["version"], m["option1"]) for m in messages] == [(3, 5)]


async def _handshakes(poll, cases) -> list[bool]:
    results = []
    for case in cases:
        comm = communicator(f"/ws/polls/{poll.pk}", **case)
        connected, _ = await comm.connect()
        results.append(connected and (await receive(comm))["type"] == "poll.snapshot")
        await comm.disconnect()
    return results


def test_an_origin_of_another_site_scheme_or_port_is_refused_at_the_handshake(live):
    poll = make_poll()
    origins = [
        b"http://evil.example",
        b"http://localhost.evil.example",
        b"null",
        b"http://localhost:9999",
        b"https://localhost",
        b"https://localhost:8443",
        b"http://127.0.0.1:8000",
        b"ws://localhost",
    ]
    assert run(_handshakes, poll, [{"origin": origin} for origin in origins]) == [False] * len(origins)
    # A host outside ALLOWED_HOSTS is refused even when Origin names it (DNS rebinding).
    assert run(_handshakes, poll, [{"origin": b"http://evil.example", "host": b"evil.example"}]) == [False]
    assert connection_slots.open == 0


def test_the_sites_own_origin_and_non_browser_clients_without_origin_are_accepted(live):
    poll = make_poll()
    cases = [
        {"origin": b"http://localhost"},
        {"origin": None},
        {"origin": b"http://127.0.0.1:8000", "host": b"127.0.0.1:8000"},
    ]
    assert run(_handshakes, poll, cases) == [True, True, True]


def test_trusted_origins_are_accepted_as_django_trusts_them_for_csrf(live, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://polls.example.com", "https://*.example.org"]
    poll = make_poll()
    origins = [
        b"https://polls.example.com",
        b"https://live.example.org",
        b"http://polls.example.com",
        b"http://live.example.org",
        b"https://example.org.evil.example",
    ]
    results = run(_handshakes, poll, [{"origin": origin} for origin in origins])
    assert results == [True, True, False, False, False]


def test_behind_a_tls_proxy_the_https_page_of_the_site_is_its_origin(live, settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    poll = make_poll()
    proxied = [(b"x-forwarded-proto", b"https")]
    cases = [
        {"origin": b"https://localhost", "headers": proxied},
        {"origin": b"http://localhost", "headers": proxied},
        {"origin": b"http://localhost"},
    ]
    assert run(_handshakes, poll, cases) == [True, False, True]


def test_an_unknown_or_malformed_poll_id_closes_with_4404_and_says_why(live):
    poll = make_poll()

    async def scenario():
        outcomes = []
        for path in (
            f"/ws/polls/{poll.pk + 1000}",
            "/ws/polls/abc",
            "/ws/polls/1e3",
            "/ws/polls/" + "9" * 30,
            "/ws/nope",
            "/elsewhere",
        ):
            comm = communicator(path)
            connected, _ = await comm.connect()
            first = await receive(comm)
            closed = await comm.receive_output(timeout=2)
            outcomes.append((path, connected, first["type"], first["code"], closed))
            await comm.wait()
        return outcomes

    for path, connected, kind, code, closed in run(scenario):
        assert (connected, kind, code) == (True, "error", "not_found"), path
        assert closed == {"type": "websocket.close", "code": CLOSE_NOT_FOUND}, path
    assert connection_slots.open == 0


def test_a_hidden_poll_is_not_found_and_hiding_it_tells_its_viewers(live):
    hidden, shown = make_poll("Hidden?", ("a", "b")), make_poll("Shown?", ("c", "d"))
    Poll.objects.filter(pk=hidden.pk).update(hidden=True)

    async def scenario():
        comm = communicator(f"/ws/polls/{hidden.pk}")
        await comm.connect()
        refused = await receive(comm)
        closed = await comm.receive_output(timeout=2)

        viewer = communicator(f"/ws/polls/{shown.pk}")
        assert (await viewer.connect())[0]
        await receive(viewer)
        await database_sync_to_async(Poll.objects.filter(pk=shown.pk).update)(hidden=True)
        # What the moderation service does after hiding a poll.
        get_broadcaster().request(poll_ids=[shown.pk])
        removed = await receive(viewer)
        viewer_closed = await viewer.receive_output(timeout=2)
        return refused, closed, removed, viewer_closed

    refused, closed, removed, viewer_closed = run(scenario)
    assert refused["code"] == "not_found" and closed["code"] == CLOSE_NOT_FOUND
    assert removed == {"type": "poll.removed", "id": shown.pk}
    assert viewer_closed["code"] == CLOSE_NOT_FOUND


def test_results_held_back_until_close_are_null_on_the_socket(live):
    poll = make_poll()
    Poll.objects.filter(pk=poll.pk).update(results_visibility=Poll.Visibility.AFTER_CLOSE)

    async def scenario():
        comm = communicator(f"/ws/polls/{poll.pk}")
        assert (await comm.connect())[0]
        snapshot = await receive(comm)
        for option in (1, 2, 1):
            await apply_votes(poll, option)
        assert await sync_to_async(get_broadcaster().flush)(10.0)
        held = await drain(comm, quiet=0.5)
        await database_sync_to_async(Poll.objects.filter(pk=poll.pk).update)(status=Poll.Status.CLOSED)
        get_broadcaster().request(poll_ids=[poll.pk])
        after_close = (await receive_until(comm, lambda m: m["status"] == "closed"))[-1]
        await comm.disconnect()
        return snapshot, held, after_close

    snapshot, held, after_close = run(scenario)
    for message in (snapshot, *held):
        assert message["results_hidden"] is True
        assert message["option1"] is None and message["total"] is None
        assert all(option["count"] is None for option in message["options"])
        # Neither the version nor the number of updates tells how many batches came in:
        # at most one update (the broadcaster's first send of the poll), the same as the snapshot.
        assert message["version"] == 0
    assert len(held) <= 1
    assert after_close["results_hidden"] is False
    assert (after_close["option1"], after_close["option2"], after_close["total"], after_close["version"]) == (
        2,
        1,
        3,
        3,
    )


def test_a_voter_watching_an_after_vote_poll_is_told_of_its_close(live):
    """A viewer who voted watches from the poll's results group, and the public group's
    updates do not reach it: once the poll closed, the broadcaster sent only those, and
    the voter's page stayed 'open' until it reconnected."""
    poll = poll_create(
        question="Seen once voted?", options=("Yes", "No"), results_visibility=Poll.Visibility.AFTER_VOTE
    )
    token_id, signed = voter_token_issue()
    voter = Voter(user_id=None, token_id=token_id, address_key=client_address_key("unknown"))
    votes_apply(events=[vote_event(poll, 1, voter_key=voter.key), vote_event(poll, 2), vote_event(poll, 2)])

    async def scenario():
        voted = communicator(f"/ws/polls/{poll.pk}", headers=[(b"cookie", f"voter={signed}".encode())])
        stranger = communicator(f"/ws/polls/{poll.pk}")
        assert (await voted.connect())[0] and (await stranger.connect())[0]
        snapshots = await receive(voted), await receive(stranger)
        await apply_votes(poll, 2)  # the voter sees each batch; the stranger has nothing new to see
        counted = (await receive_until(voted, lambda m: m["total"] == 4))[-1]
        await sync_to_async(get_broadcaster().flush)(10.0)
        unseen = await drain(stranger, quiet=0.3)
        await database_sync_to_async(poll_set_status)(poll=poll, status=Poll.Status.CLOSED)
        closed = [(await receive_until(comm, lambda m: m["status"] == "closed"))[-1] for comm in (voted, stranger)]
        await voted.disconnect()
        await stranger.disconnect()
        return snapshots, counted, unseen, closed

    (voter_snapshot, stranger_snapshot), counted, unseen, closed = run(scenario)
    assert (counted["option2"], counted["version"]) == (3, 2)
    assert all(message["results_hidden"] and message["version"] == 0 for message in unseen) and len(unseen) <= 1
    assert (voter_snapshot["results_hidden"], voter_snapshot["total"]) == (False, 3)
    assert (stranger_snapshot["results_hidden"], stranger_snapshot["total"]) == (True, None)
    for message in closed:
        assert (message["results_hidden"], message["option1"], message["option2"], message["total"]) == (False, 1, 3, 4)


def test_garbage_from_a_client_gets_error_messages_then_a_4400_close(live):
    poll = make_poll()

    async def scenario():
        comm = communicator(f"/ws/polls/{poll.pk}")
        assert (await comm.connect())[0]
        await receive(comm)
        await comm.send_to(text_data='{"type": "ping"}')
        pong = await receive(comm)
        answers = []
        garbage = [
            "not json",
            "[1, 2]",
            '{"type": "vote", "option": 1}',
            "{",
            '"ping"',
            "[" * 100_000,
            "null",
            "1e999999",
        ]
        for text in garbage:
            await comm.send_to(text_data=text)
            answers.append(await receive(comm))
        await comm.send_to(bytes_data=b"\x89PNG")
        answers.append(await receive(comm))
        await comm.send_to(text_data="still garbage")
        answers.append(await receive(comm))
        closed = await comm.receive_output(timeout=2)
        # Frames the client sent before it saw the close get no answer.
        await comm.send_to(text_data="late garbage")
        late = await comm.receive_nothing(timeout=0.5)
        return pong, answers, closed, late

    pong, answers, closed, late = run(scenario)
    assert pong == {"type": "pong"}
    assert late is True
    assert len(answers) == 10
    assert all(a["type"] == "error" and a["message"] for a in answers)
    assert [a["code"] for a in answers[:2]] == ["invalid_json", "unknown_message"]
    assert answers[8]["code"] == "binary_not_supported"
    assert closed == {"type": "websocket.close", "code": CLOSE_BAD_MESSAGES}
    assert connection_slots.open == 0


def test_connections_past_the_per_process_cap_are_refused_with_1013_until_one_leaves(live, settings):
    settings.WS_MAX_CONNECTIONS = 2
    poll = make_poll()

    async def scenario():
        first, second = communicator(f"/ws/polls/{poll.pk}"), communicator("/ws")
        for comm in (first, second):
            assert (await comm.connect())[0]
            await receive(comm)
        assert connection_slots.open == 2
        third = communicator(f"/ws/polls/{poll.pk}")
        await third.connect()
        refused = await receive(third)
        closed = await third.receive_output(timeout=2)
        await third.wait()
        await first.disconnect()
        fourth = communicator(f"/ws/polls/{poll.pk}")
        assert (await fourth.connect())[0]
        accepted = await receive(fourth)
        await second.disconnect()
        await fourth.disconnect()
        return refused, closed, accepted

    refused, closed, accepted = run(scenario)
    assert refused["type"] == "error" and refused["code"] == "too_many_connections"
    assert closed == {"type": "websocket.close", "code": CLOSE_TRY_AGAIN_LATER}
    assert accepted["type"] == "poll.snapshot"


def test_viewers_connecting_together_share_the_snapshot_read_and_all_get_it(live, django_assert_max_num_queries):
    poll = make_poll()
    run(apply_votes, poll, 3)

    async def scenario():
        comms = [communicator(f"/ws/polls/{poll.pk}") for _ in range(50)]
        results = await asyncio.gather(*(comm.connect() for comm in comms))
        snapshots = [await receive(comm) for comm in comms]
        for comm in comms:
            await comm.disconnect()
        return results, snapshots

    # One read is three statements (snapshot isolation, the poll, its options): 150 for
    # 50 viewers reading alone; together they share a few reads.
    with django_assert_max_num_queries(15):
        results, snapshots = run(scenario)
    assert all(connected for connected, _ in results)
    assert all(s["type"] == "poll.snapshot" and s["option3"] == 1 and s["version"] == 1 for s in snapshots)


def test_the_layer_message_carries_the_client_json_encoded_once(live):
    poll = make_poll()
    totals = poll_live_totals(poll_id=poll.pk).public
    message = poll_updated_layer_message(totals=totals)
    assert message["type"] == "poll.updated"
    assert (message["poll_id"], message["version"]) == (poll.pk, 0)
    assert json.loads(message["text"]) == {"type": "poll.updated", **totals}
