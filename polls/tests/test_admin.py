"""Moderation through Django admin, as a staff user would do it."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from polls.models import AuditEntry, Poll, Vote
from polls.services import votes_apply
from polls.tests.factories import make_poll, vote_event

pytestmark = pytest.mark.django_db


@pytest.fixture
def moderator():
    user = get_user_model().objects.create_user("mod", password="a-long-moderator-password", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_poll", "change_poll", "view_vote", "view_auditentry"]))
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    return client


def act(client, action, *polls):
    return client.post("/admin/polls/poll/", {"action": action, "_selected_action": [p.pk for p in polls]})


def test_staff_close_reopen_and_hide_polls_with_an_audit_trail(moderator):
    poll = make_poll()
    assert act(moderator, "close_polls", poll).status_code == 302
    assert Poll.objects.get(pk=poll.pk).status == "closed"
    act(moderator, "reopen_polls", poll)
    act(moderator, "hide_polls", poll)
    poll.refresh_from_db()
    assert (poll.status, poll.hidden) == ("open", True)
    assert [(e.action, e.actor.username) for e in AuditEntry.objects.order_by("id")] == [
        ("close", "mod"), ("reopen", "mod"), ("hide", "mod")]
    assert Client(HTTP_HOST="localhost").get(f"/polls/{poll.pk}").status_code == 404


def test_the_poll_list_searches_filters_and_shows_counts(moderator):
    poll = make_poll("Which editor?", ("vim", "emacs"))
    make_poll("Unrelated")
    votes_apply(events=[vote_event(poll, 1), vote_event(poll, 1)])
    page = moderator.get("/admin/polls/poll/?q=editor&status__exact=open")
    assert page.status_code == 200
    assert b"Which editor?" in page.content and b"Unrelated" not in page.content
    detail = moderator.get(f"/admin/polls/poll/{poll.pk}/change/")
    assert detail.status_code == 200 and b"2 vote rows" in detail.content
    history = moderator.get(f"/admin/polls/vote/?poll__id__exact={poll.pk}")
    assert history.status_code == 200


def test_the_export_action_downloads_csv(moderator):
    poll = make_poll()
    votes_apply(events=[vote_event(poll, 2)])
    response = act(moderator, "export_results_csv", poll)
    assert response.status_code == 200
    lines = response.content.decode().splitlines()
    assert lines[0] == "poll_id,question,position,option,votes,percent"
    assert lines[2] == f"{poll.pk},Favourite colour?,2,Blue,1,100.0"
    assert AuditEntry.objects.filter(poll=poll, action="export").count() == 1


def test_people_who_are_not_staff_cannot_moderate():
    user = get_user_model().objects.create_user("visitor", password="a-long-visitor-password")
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    poll = make_poll()
    response = act(client, "close_polls", poll)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert Poll.objects.get(pk=poll.pk).status == "open"


def test_a_moderator_deletes_selected_polls_locking_their_options_once(moderator):
    """Polls without votes (the vote rows are records the admin never deletes): votes may
    still be on their way to them, and the lock makes the worker's batch wait its turn."""
    get_user_model().objects.get(username="mod").user_permissions.add(Permission.objects.get(codename="delete_poll"))
    doomed, kept = [make_poll(question="Spam?"), make_poll(question="More spam?")], make_poll(question="Fine?")
    votes_apply(events=[vote_event(kept, 1)])
    with CaptureQueriesContext(connection) as queries:
        response = moderator.post(
            "/admin/polls/poll/", {"action": "delete_selected", "_selected_action": [p.pk for p in doomed], "post": "yes"}
        )
    assert response.status_code == 302
    assert list(Poll.objects.values_list("pk", flat=True)) == [kept.pk]
    assert list(Vote.objects.values_list("poll_id", flat=True)) == [kept.pk]
    # The options of both polls in one statement, before the cascade (PollQuerySet.delete).
    assert len([q for q in queries if q["sql"].endswith("FOR UPDATE")]) == 1
