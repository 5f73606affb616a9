"""Who may vote how often, retries, multiple choice, deadlines and results visibility."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token

from polls.domain import services
from polls.domain.services import counters_verify, poll_create, poll_set_status, votes_apply
from polls.kafka.bus import reset_vote_bus
from polls.models import Poll, Vote
from polls.tests.factories import counts, make_poll, vote_event
from tests.http import request
from testsupport.kafka import read_topic
from testsupport.processes import wait_until


@pytest.fixture
def client():
    return Client(HTTP_HOST="localhost")


def vote(client, poll, body, **headers):
    return client.post(f"/polls/{poll.pk}/vote", json.dumps(body), content_type="application/json", **headers)


def voter_token(client) -> str:
    response = client.post("/voters", content_type="application/json")
    assert response.status_code == 201
    return response.json()["voter_token"]


@pytest.mark.django_db
def test_a_second_ballot_with_the_same_dedupe_key_is_never_counted():
    poll = poll_create(question="One each", options=["a", "b"], one_vote_per=Poll.OneVotePer.VOTER)
    result = votes_apply(events=[vote_event(poll, 1 + n % 2, dedupe_key="voter:x") for n in range(100)])
    assert (result.applied, result.duplicates) == (1, 99)
    assert sum(counts(poll)) == 1
    assert counters_verify() == []


def test_one_vote_per_voter_holds_under_100_concurrent_duplicates(web_server, vote_worker):
    created = request(
        "POST",
        f"{web_server.url}/polls",
        {"question": "Once?", "option1": "yes", "option2": "no", "one_vote_per": "voter"},
    )
    poll_id = created.json()["id"]
    token = request("POST", f"{web_server.url}/voters").json()["voter_token"]

    def cast(n):
        return request(
            "POST", f"{web_server.url}/polls/{poll_id}/vote", {"option": 1 + n % 2}, headers={"X-Voter-Token": token}
        ).status

    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(cast, range(100)))
    assert set(statuses) <= {204, 409}, statuses
    assert statuses.count(204) >= 1
    wait_until(lambda: Vote.objects.filter(poll_id=poll_id).count() == 1, timeout=30, what="the one ballot")
    time.sleep(2)  # every other published duplicate reaches the worker too, and is refused
    body = request("GET", f"{web_server.url}/polls/{poll_id}").json()
    assert body["total"] == 1
    assert Vote.objects.filter(poll_id=poll_id).count() == 1
    # Once the ballot is in, a duplicate hears 409 at once.
    assert cast(0) == 409
    assert counters_verify() == []


@pytest.mark.django_db
def test_a_detectable_duplicate_gets_409(client, in_process_bus):
    poll = poll_create(question="Once?", options=["yes", "no"], one_vote_per=Poll.OneVotePer.VOTER)
    token = voter_token(client)
    assert vote(client, poll, {"option": 1}, HTTP_X_VOTER_TOKEN=token).status_code == 204
    response = vote(client, poll, {"option": 2}, HTTP_X_VOTER_TOKEN=token)
    assert (response.status_code, response.json()) == (
        409,
        {"detail": f"You have already voted in poll {poll.pk}: it takes one vote per voter."},
    )
    assert counts(poll) == [1, 0]


@pytest.mark.django_db
def test_a_forged_voter_token_is_refused(client, kafka_topic):
    poll = make_poll()
    response = vote(client, poll, {"option": 1}, HTTP_X_VOTER_TOKEN="made-up:token")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Voter-Token"
    assert response.json() == {
        "detail": "X-Voter-Token is not a voter token issued by this server: get one from POST /voters."
    }
    assert read_topic(kafka_topic) == []


@pytest.mark.django_db
def test_the_first_vote_issues_a_signed_voter_cookie(client, kafka_topic):
    poll = make_poll()
    response = vote(client, poll, {"option": 1})
    assert response.status_code == 204
    cookie = response.cookies["voter"]
    assert cookie["httponly"] and ":" in cookie.value


@pytest.mark.django_db
def test_one_vote_per_user_needs_a_signed_in_user_and_counts_once(client, in_process_bus):
    poll = poll_create(question="Members only", options=["a", "b"], one_vote_per=Poll.OneVotePer.USER)
    response = vote(client, poll, {"option": 1})
    assert (response.status_code, response.json()) == (
        401,
        {"detail": "Sign in to vote in this poll: it takes one vote per signed-in user."},
    )
    user = get_user_model().objects.create_user("ada", password="pw-not-used-here")
    auth = {"HTTP_AUTHORIZATION": f"Token {Token.objects.create(user=user).key}"}
    assert vote(client, poll, {"option": 2}, **auth).status_code == 204
    assert vote(client, poll, {"option": 1}, **auth).status_code == 409
    assert counts(poll) == [0, 1]
    assert Vote.objects.get(poll=poll).dedupe_key == f"user:{user.pk}"


def test_an_idempotency_key_makes_a_retried_vote_count_once(client, kafka_topic, worker_thread):
    poll = make_poll()
    for _ in range(3):
        assert vote(client, poll, {"option": 2}, HTTP_IDEMPOTENCY_KEY="retry-me-1").status_code == 204
    assert vote(client, poll, {"option": 2, "vote_id": "5f0e1c52-4b0e-4f5e-9d36-2a4f3f0c7a11"}).status_code == 204
    assert vote(client, poll, {"option": 2, "vote_id": "5f0e1c52-4b0e-4f5e-9d36-2a4f3f0c7a11"}).status_code == 204
    assert vote(client, poll, {"option": 3}, HTTP_IDEMPOTENCY_KEY="another-key").status_code == 204
    wait_until(lambda: counts(poll) == [0, 2, 1, 0], timeout=30, what="3 distinct ballots counted")
    # A retry after the ballot was counted is answered 204 without publishing again.
    published = len(read_topic(kafka_topic))
    assert vote(client, poll, {"option": 2}, HTTP_IDEMPOTENCY_KEY="retry-me-1").status_code == 204
    assert len(read_topic(kafka_topic)) == published
    assert counts(poll) == [0, 2, 1, 0]
    # So is one after the poll closed: the client may have missed the first 204. A new
    # ballot, or a key never counted, is refused.
    poll_set_status(poll=poll, status=Poll.Status.CLOSED)
    assert vote(client, poll, {"option": 2}, HTTP_IDEMPOTENCY_KEY="retry-me-1").status_code == 204
    assert vote(client, poll, {"option": 2}, HTTP_IDEMPOTENCY_KEY="never-sent").status_code == 409
    assert vote(client, poll, {"option": 2}).status_code == 409
    assert len(read_topic(kafka_topic)) == published
    assert counts(poll) == [0, 2, 1, 0]


def test_multiple_choice_ballots_are_counted_exactly(client, kafka_topic, worker_thread):
    response = client.post(
        "/polls",
        json.dumps({"question": "Pick two", "options": ["a", "b", "c", "d", "e"], "max_choices": 2}),
        content_type="application/json",
    )
    assert response.status_code == 201
    poll = Poll.objects.get(pk=response.json()["id"])
    for options in ([1, 3], [3, 5], [2], [1, 3]):
        assert vote(client, poll, {"options": options}).status_code == 204
    wait_until(lambda: counts(poll) == [2, 1, 3, 0, 1], timeout=30, what="4 ballots, 7 choices")
    assert Vote.objects.filter(poll=poll).values("ballot_id").distinct().count() == 4
    too_many = vote(client, poll, {"options": [1, 2, 3]})
    assert (too_many.status_code, too_many.json()) == (
        409,
        {"options": ["At most 2 options may be chosen in this poll."]},
    )
    repeated = vote(client, poll, {"options": [4, 4]})
    assert (repeated.status_code, repeated.json()) == (400, {"options": ["The same option is chosen twice."]})
    both = vote(client, poll, {"option": 1, "options": [1]})
    assert both.status_code == 400
    assert counters_verify() == []


@pytest.mark.django_db
def test_a_vote_after_closes_at_gets_409_with_no_job_needed(client, kafka_topic):
    poll = poll_create(question="Quick", options=["a", "b"], closes_at=timezone.now() + timedelta(seconds=60))
    Poll.objects.filter(pk=poll.pk).update(closes_at=timezone.now() - timedelta(seconds=1))
    response = vote(client, poll, {"option": 1})
    assert (response.status_code, response.json()) == (409, {"detail": f"Poll {poll.pk} is closed to votes."})
    assert client.get(f"/polls/{poll.pk}").json()["status"] == "closed"
    assert read_topic(kafka_topic) == []


@pytest.mark.django_db
def test_results_visibility_hides_counts_until_the_viewer_voted_or_the_poll_closed(client, in_process_bus):
    after_vote = poll_create(question="Hidden until you vote", options=["a", "b"], results_visibility="after_vote")
    after_close = poll_create(question="Hidden until closed", options=["a", "b"], results_visibility="after_close")
    token = voter_token(client)
    hidden = client.get(f"/polls/{after_vote.pk}", HTTP_X_VOTER_TOKEN=token).json()
    assert (hidden["option1"], hidden["total"], hidden["results_hidden"]) == (None, None, True)
    assert vote(client, after_vote, {"option": 1}, HTTP_X_VOTER_TOKEN=token).status_code == 204
    shown = client.get(f"/polls/{after_vote.pk}", HTTP_X_VOTER_TOKEN=token).json()
    assert (shown["option1"], shown["total"], shown["results_hidden"]) == (1, 1, False)

    assert vote(client, after_close, {"option": 2}, HTTP_X_VOTER_TOKEN=token).status_code == 204
    assert client.get(f"/polls/{after_close.pk}", HTTP_X_VOTER_TOKEN=token).json()["option2"] is None
    assert client.get(f"/polls/{after_close.pk}/export.json").status_code == 403
    Poll.objects.filter(pk=after_close.pk).update(status=Poll.Status.CLOSED)
    assert client.get(f"/polls/{after_close.pk}").json()["option2"] == 1
    # Neither shows on the leaderboard, which is public.
    board = client.get("/leaderboard").json()["leaderboard"]
    assert {entry["poll_id"] for entry in board} & {after_vote.pk, after_close.pk} == set()


# --- Idempotency-Key: scoped to the voter, bound to the first request's choice -------------


def test_two_voters_sending_the_same_key_both_count(client, kafka_topic, worker_thread):
    poll = poll_create(question="Once each", options=["a", "b"], one_vote_per=Poll.OneVotePer.VOTER)
    x, y = voter_token(client), voter_token(client)
    assert vote(client, poll, {"option": 1}, HTTP_X_VOTER_TOKEN=x, HTTP_IDEMPOTENCY_KEY="vote-1").status_code == 204
    assert vote(client, poll, {"option": 2}, HTTP_X_VOTER_TOKEN=y, HTTP_IDEMPOTENCY_KEY="vote-1").status_code == 204
    # Two clients without a token, from two addresses: two more voters.
    for address, option in (("10.0.0.1", 1), ("10.0.0.2", 2)):
        response = vote(
            Client(HTTP_HOST="localhost"), poll, {"option": option}, HTTP_IDEMPOTENCY_KEY="vote-1", REMOTE_ADDR=address
        )
        assert response.status_code == 204
    wait_until(lambda: counts(poll) == [2, 2], timeout=30, what="four voters' ballots counted")
    # Each of X and Y is recorded as having voted: another vote, keyed or not, is refused.
    assert vote(client, poll, {"option": 1}, HTTP_X_VOTER_TOKEN=y).status_code == 409
    assert vote(client, poll, {"option": 2}, HTTP_X_VOTER_TOKEN=x, HTTP_IDEMPOTENCY_KEY="vote-2").status_code == 409
    assert counts(poll) == [2, 2]
    assert counters_verify() == []


def test_a_key_reused_with_another_choice_is_409_and_nothing_more_is_counted(client, kafka_topic, worker_thread):
    poll = poll_create(question="Up to two", options=["a", "b", "c"], max_choices=2)
    token = voter_token(client)
    keyed = {"HTTP_X_VOTER_TOKEN": token, "HTTP_IDEMPOTENCY_KEY": "vote-1"}
    assert vote(client, poll, {"option": 1}, **keyed).status_code == 204
    for other in ({"option": 2}, {"options": [1, 2]}, {"option": 99}):
        response = vote(client, poll, other, **keyed)
        assert (response.status_code, response.json()) == (
            409,
            {
                "detail": (
                    "This Idempotency-Key was already used with a different request (another choice of options): "
                    "send the same request to retry it, or a new key for a new vote."
                )
            },
        ), other
    # The same choice, in either shape, is the first request again: 204, published once.
    assert vote(client, poll, {"option": 1}, **keyed).status_code == 204
    assert vote(client, poll, {"options": [1]}, **keyed).status_code == 204
    wait_until(lambda: counts(poll) == [1, 0, 0], timeout=30, what="the one ballot counted")
    assert len(read_topic(kafka_topic)) == 1

    # Past the record's time (here: the cache emptied) the stored ballot answers alike.
    cache.clear()
    assert vote(client, poll, {"option": 2}, **keyed).status_code == 409
    assert vote(client, poll, {"option": 1}, **keyed).status_code == 204
    # A ballot of several choices is compared whole, in any order.
    assert (
        vote(client, poll, {"options": [3, 2]}, HTTP_X_VOTER_TOKEN=token, HTTP_IDEMPOTENCY_KEY="vote-2").status_code
        == 204
    )
    wait_until(lambda: counts(poll) == [1, 1, 1], timeout=30, what="the second ballot counted")
    cache.clear()
    for other, status in (({"options": [2]}, 409), ({"options": [2, 3, 1]}, 409), ({"options": [2, 3]}, 204)):
        assert vote(client, poll, other, HTTP_X_VOTER_TOKEN=token, HTTP_IDEMPOTENCY_KEY="vote-2").status_code == status
    assert len(read_topic(kafka_topic)) == 2
    assert counts(poll) == [1, 1, 1]
    assert counters_verify() == []


class _GatedBus:
    """The real bus, holding each vote until the test lets it through."""

    def __init__(self, bus):
        self.bus, self.reached, self.go = bus, threading.Event(), threading.Event()

    def publish(self, event):
        self.reached.set()
        assert self.go.wait(30)
        self.bus.publish(event)


@pytest.mark.django_db(transaction=True)
def test_a_key_in_flight_is_409_until_its_first_request_ends(in_process_bus, monkeypatch):
    poll = make_poll()
    token = voter_token(Client(HTTP_HOST="localhost"))
    keyed = {"HTTP_X_VOTER_TOKEN": token, "HTTP_IDEMPOTENCY_KEY": "slow-1"}
    gated = _GatedBus(services.get_vote_bus())
    monkeypatch.setattr(services, "get_vote_bus", lambda: gated)

    def first():
        try:
            return vote(Client(HTTP_HOST="localhost"), poll, {"option": 1}, **keyed).status_code
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        first_status = pool.submit(first)
        assert gated.reached.wait(30)
        again = vote(Client(HTTP_HOST="localhost"), poll, {"option": 1}, **keyed)
        assert (again.status_code, again.json()) == (
            409,
            {"detail": "A request with this Idempotency-Key is still being processed: retry later."},
        )
        assert again["Retry-After"] == "2"
        gated.go.set()
        assert first_status.result(30) == 204
    assert vote(Client(HTTP_HOST="localhost"), poll, {"option": 1}, **keyed).status_code == 204
    assert counts(poll) == [1, 0, 0, 0]


def test_a_key_is_free_again_after_its_first_request_failed(client, settings, kafka_topic, worker_thread):
    poll = make_poll()
    token = voter_token(client)
    keyed = {"HTTP_X_VOTER_TOKEN": token, "HTTP_IDEMPOTENCY_KEY": "vote-1"}
    # Refused before publishing (a 4xx): no record, so another choice may follow.
    assert vote(client, poll, {"option": 9}, **keyed).status_code == 409
    # The vote log unreachable: 503, and a retry of the same vote succeeds once it is back.
    brokers = settings.KAFKA_BROKERS
    settings.KAFKA_BROKERS, settings.VOTE_PUBLISH_TIMEOUT = ["127.0.0.1:9"], 0.5
    reset_vote_bus()
    refused = vote(client, poll, {"option": 2}, **keyed)
    assert (refused.status_code, refused["Retry-After"]) == (503, "2")
    # A 503's vote may have reached the log all the same: its key takes no other choice.
    assert vote(client, poll, {"option": 3}, **keyed).status_code == 409
    settings.KAFKA_BROKERS = brokers
    reset_vote_bus()
    assert vote(client, poll, {"option": 2}, **keyed).status_code == 204
    assert vote(client, poll, {"option": 2}, **keyed).status_code == 204
    wait_until(lambda: counts(poll) == [0, 1, 0, 0], timeout=30, what="the retried ballot counted")
    assert len(read_topic(kafka_topic)) == 1


@pytest.mark.django_db
def test_a_first_votes_retry_without_its_cookie_is_the_same_ballot(in_process_bus):
    poll = poll_create(question="Once?", options=["yes", "no"], one_vote_per=Poll.OneVotePer.VOTER)
    first = vote(Client(HTTP_HOST="localhost"), poll, {"option": 1}, HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == 204
    cookie = first.cookies["voter"].value
    # The client never got that answer: its retry has no cookie, from the same address.
    retry = vote(Client(HTTP_HOST="localhost"), poll, {"option": 1}, HTTP_IDEMPOTENCY_KEY="k-1")
    assert retry.status_code == 204
    assert retry.cookies["voter"].value == cookie  # the first answer's cookie: one voter
    # It did get it: a retry with the cookie is the same ballot too, also once only the
    # vote rows remember it.
    with_cookie = Client(HTTP_HOST="localhost")
    with_cookie.cookies["voter"] = cookie
    assert vote(with_cookie, poll, {"option": 1}, HTTP_IDEMPOTENCY_KEY="k-1").status_code == 204
    cache.clear()
    assert vote(with_cookie, poll, {"option": 1}, HTTP_IDEMPOTENCY_KEY="k-1").status_code == 204
    assert vote(with_cookie, poll, {"option": 2}, HTTP_IDEMPOTENCY_KEY="k-1").status_code == 409
    assert vote(with_cookie, poll, {"option": 2}).status_code == 409
    assert counts(poll) == [1, 0]


@pytest.mark.django_db
def test_with_the_cache_down_a_keyed_vote_is_503_and_a_vote_without_a_key_goes_on(client, settings, in_process_bus):
    poll = make_poll()
    settings.CACHES = {
        "default": {
            "BACKEND": "polling.cache.SharedClientRedisCache",
            "LOCATION": "redis://127.0.0.1:9",
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    refused = vote(client, poll, {"option": 1}, HTTP_IDEMPOTENCY_KEY="vote-1")
    assert (refused.status_code, refused["Retry-After"], refused.json()) == (
        503,
        "2",
        {"detail": "The vote was not recorded: its Idempotency-Key cannot be checked now. Retry later."},
    )
    assert vote(client, poll, {"option": 2}).status_code == 204
    assert counts(poll) == [0, 1, 0, 0]
