"""Who may vote how often, retries, multiple choice, deadlines and results visibility."""

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token

from conftest import read_topic
from polls.models import Poll, Vote
from polls.services import counters_verify, poll_create, poll_set_status, votes_apply
from polls.tests.factories import counts, make_poll, vote_event
from testsupport.processes import wait_until
from tests.http import request


@pytest.fixture
def client():
    return Client(HTTP_HOST="localhost")


def vote(client, poll, body, **headers):
    return client.post(f"/polls/{poll.pk}/vote", json.dumps(body), content_type="application/json", **headers)


def voter_token(client) -> str:
    response = client.post("/voters")
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
    created = request("POST", f"{web_server.url}/polls",
                      {"question": "Once?", "option1": "yes", "option2": "no", "one_vote_per": "voter"})
    poll_id = created.json()["id"]
    token = request("POST", f"{web_server.url}/voters").json()["voter_token"]

    def cast(n):
        return request("POST", f"{web_server.url}/polls/{poll_id}/vote", {"option": 1 + n % 2},
                       headers={"X-Voter-Token": token}).status

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
        409, {"detail": f"You have already voted in poll {poll.pk}: it takes one vote per voter."})
    assert counts(poll) == [1, 0]


@pytest.mark.django_db
def test_a_forged_voter_token_is_refused(client, kafka_topic):
    poll = make_poll()
    response = vote(client, poll, {"option": 1}, HTTP_X_VOTER_TOKEN="made-up:token")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Voter-Token"
    assert response.json() == {"detail": "X-Voter-Token is not a voter token issued by this server: get one from POST /voters."}
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
        401, {"detail": "Sign in to vote in this poll: it takes one vote per signed-in user."})
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
    response = client.post("/polls", json.dumps({"question": "Pick two", "options": ["a", "b", "c", "d", "e"], "max_choices": 2}),
                           content_type="application/json")
    assert response.status_code == 201
    poll = Poll.objects.get(pk=response.json()["id"])
    for options in ([1, 3], [3, 5], [2], [1, 3]):
        assert vote(client, poll, {"options": options}).status_code == 204
    wait_until(lambda: counts(poll) == [2, 1, 3, 0, 1], timeout=30, what="4 ballots, 7 choices")
    assert Vote.objects.filter(poll=poll).values("ballot_id").distinct().count() == 4
    too_many = vote(client, poll, {"options": [1, 2, 3]})
    assert (too_many.status_code, too_many.json()) == (409, {"options": ["At most 2 options may be chosen in this poll."]})
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
