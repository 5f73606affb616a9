"""Counts a poll holds back (after_close, after_vote) stay held back on every path:
close and reopen, the exports, the admin's export and its audit trail."""

import csv
import io

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from rest_framework.authtoken.models import Token

from polls.admin import HELD_BACK_NOTE
from polls.domain.services import poll_create, poll_set_status, votes_apply
from polls.domain.voters import voter_token_read
from polls.models import AuditEntry, Poll
from polls.tests.factories import vote_event

pytestmark = pytest.mark.django_db

HELD_BACK = [Poll.Visibility.AFTER_CLOSE, Poll.Visibility.AFTER_VOTE]


@pytest.fixture
def people():
    users = get_user_model().objects
    creator = users.create_user("creator")
    staff = users.create_user("staff", is_staff=True)
    return {"creator": creator, "staff": staff}


def as_user(user) -> dict:
    return {"HTTP_AUTHORIZATION": f"Token {Token.objects.get_or_create(user=user)[0].key}"}


def held_back_poll(visibility: str, creator) -> Poll:
    poll = poll_create(question="Held back?", options=("a", "b"), results_visibility=visibility, created_by=creator)
    votes_apply(events=[vote_event(poll, 1), vote_event(poll, 1), vote_event(poll, 2)])
    return poll


@pytest.mark.parametrize("visibility", HELD_BACK)
@pytest.mark.parametrize("who", ["creator", "staff"])
def test_reopening_an_open_poll_answers_it_as_get_shows_it_and_leaks_no_count(visibility, who, people):
    client = Client(HTTP_HOST="localhost")
    poll = held_back_poll(visibility, people["creator"])
    headers = as_user(people[who])
    for _ in range(3):  # as often as one likes: the same answer, nothing recorded
        reopened = client.post(f"/polls/{poll.pk}/reopen", **headers)
        assert reopened.status_code == 200
        assert reopened.json() == client.get(f"/polls/{poll.pk}", **headers).json()
        body = reopened.json()
        assert (body["option1"], body["option2"], body["total"], body["results_hidden"]) == (None, None, None, True)
        assert [option["count"] for option in body["options"]] == [None, None]
        assert body["version"] == 0  # the state's version, not the batches'
    assert not AuditEntry.objects.filter(poll=poll).exists()


@pytest.mark.parametrize("visibility", HELD_BACK)
def test_close_and_reopen_answer_the_poll_as_the_caller_may_see_it(visibility, people):
    client = Client(HTTP_HOST="localhost")
    poll = held_back_poll(visibility, people["creator"])
    headers = as_user(people["creator"])
    closed = client.post(f"/polls/{poll.pk}/close", **headers).json()
    assert (closed["status"], closed["option1"], closed["option2"], closed["results_hidden"]) == ("closed", 2, 1, False)
    again = client.post(f"/polls/{poll.pk}/close", **headers).json()
    assert again == closed == client.get(f"/polls/{poll.pk}", **headers).json()
    reopened = client.post(f"/polls/{poll.pk}/reopen", **headers).json()
    assert (reopened["status"], reopened["option1"], reopened["total"], reopened["results_hidden"]) == (
        "open",
        None,
        None,
        True,
    )
    assert reopened == client.get(f"/polls/{poll.pk}", **headers).json()
    assert list(AuditEntry.objects.filter(poll=poll).order_by("id").values_list("action", flat=True)) == [
        "close",
        "reopen",
    ]


def test_a_creator_who_voted_in_an_after_vote_poll_sees_its_counts_when_reopening(people):
    client = Client(HTTP_HOST="localhost")
    creator = people["creator"]
    poll = held_back_poll(Poll.Visibility.AFTER_VOTE, creator)
    votes_apply(events=[vote_event(poll, 2, voter_key=f"user:{creator.pk}")])
    body = client.post(f"/polls/{poll.pk}/reopen", **as_user(creator)).json()
    assert (body["option1"], body["option2"], body["results_hidden"]) == (2, 2, False)


@pytest.mark.parametrize("visibility", HELD_BACK)
@pytest.mark.parametrize("export", ["export.csv", "export.json"])
def test_exports_are_refused_while_the_counts_are_held_back_from_the_caller(visibility, export, people):
    client = Client(HTTP_HOST="localhost")
    poll = held_back_poll(visibility, people["creator"])
    for who in ("creator", "staff"):
        refused = client.get(f"/polls/{poll.pk}/{export}", **as_user(people[who]))
        assert (refused.status_code, refused.json()) == (
            403,
            {"detail": "The results of this poll are not visible yet."},
        )
    assert client.get(f"/polls/{poll.pk}/{export}").status_code == 403
    poll_set_status(poll=poll, status=Poll.Status.CLOSED)
    exported = client.get(f"/polls/{poll.pk}/{export}")
    assert exported.status_code == 200
    if export == "export.csv":
        rows = list(csv.reader(io.StringIO(exported.content.decode())))[1:]
        assert rows == [
            [str(poll.pk), "Held back?", "1", "a", "2", "66.7"],
            [str(poll.pk), "Held back?", "2", "b", "1", "33.3"],
        ]
    else:
        assert (exported.json()["option1"], exported.json()["option2"]) == (2, 1)


def test_an_after_vote_export_opens_to_the_voter_who_voted(people):
    client = Client(HTTP_HOST="localhost")
    poll = held_back_poll(Poll.Visibility.AFTER_VOTE, people["creator"])
    token = client.post("/voters", content_type="application/json").json()["voter_token"]
    assert client.get(f"/polls/{poll.pk}/export.json", HTTP_X_VOTER_TOKEN=token).status_code == 403
    votes_apply(events=[vote_event(poll, 1, voter_key=f"voter:{voter_token_read(token)}")])
    exported = client.get(f"/polls/{poll.pk}/export.json", HTTP_X_VOTER_TOKEN=token)
    assert (exported.status_code, exported.json()["option1"], exported.json()["total"]) == (200, 3, 4)


@pytest.mark.parametrize("visibility", HELD_BACK)
def test_the_admin_export_of_held_back_counts_is_on_the_audit_trail(visibility, people):
    moderator = get_user_model().objects.create_user("mod", is_staff=True)
    moderator.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_poll", "change_poll", "view_auditentry"])
    )
    client = Client(HTTP_HOST="localhost")
    client.force_login(moderator)
    poll = held_back_poll(visibility, people["creator"])
    public = poll_create(question="Open book", options=("a", "b"))

    def export(target):
        return client.post("/admin/polls/poll/", {"action": "export_results_csv", "_selected_action": [target.pk]})

    assert export(poll).status_code == 200
    assert export(public).status_code == 200
    # The admin's reopen of an open poll changes nothing and records nothing.
    client.post("/admin/polls/poll/", {"action": "reopen_polls", "_selected_action": [poll.pk]})
    entries = list(AuditEntry.objects.order_by("id").values_list("poll_id", "action", "actor__username", "note"))
    assert entries == [(poll.pk, "export", "mod", HELD_BACK_NOTE), (public.pk, "export", "mod", "")]
    trail = client.get("/admin/polls/auditentry/")
    assert trail.status_code == 200 and HELD_BACK_NOTE.encode() in trail.content
