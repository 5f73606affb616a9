"""Moderation through Django admin, as a staff user would do it."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from polls.domain.services import votes_apply
from polls.models import AuditEntry, Poll, Vote
from polls.tests.factories import make_poll, vote_event

pytestmark = pytest.mark.django_db


@pytest.fixture
def moderator():
    user = get_user_model().objects.create_user("mod", password="a-long-moderator-password", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_poll", "change_poll", "view_vote", "view_auditentry"])
    )
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
        ("close", "mod"),
        ("reopen", "mod"),
        ("hide", "mod"),
    ]
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
    assert lines[0] == '"poll_id","question","position","option","votes","percent"'
    assert lines[2] == f'"{poll.pk}","Favourite colour?","2","Blue","1","100.0"'
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
            "/admin/polls/poll/",
            {"action": "delete_selected", "_selected_action": [p.pk for p in doomed], "post": "yes"},
        )
    assert response.status_code == 302
    assert list(Poll.objects.values_list("pk", flat=True)) == [kept.pk]
    assert list(Vote.objects.values_list("poll_id", flat=True)) == [kept.pk]
    # The options of both polls in one statement, before the cascade (PollQuerySet.delete).
    assert len([q for q in queries if q["sql"].endswith("FOR UPDATE")]) == 1


def management(prefix: str, total: int, initial: int = 0) -> dict[str, int]:
    return {
        f"{prefix}-TOTAL_FORMS": total,
        f"{prefix}-INITIAL_FORMS": initial,
        f"{prefix}-MIN_NUM_FORMS": 0,
        f"{prefix}-MAX_NUM_FORMS": 1000,
    }


def new_poll_form(positions: list[int], max_choices: int = 1) -> dict:
    data = {
        "question": "Made in the admin?",
        "results_visibility": "always",
        "one_vote_per": "none",
        "max_choices": max_choices,
        **management("options", len(positions)),
        **management("audit_entries", 0),
    }
    for index, position in enumerate(positions):
        data |= {f"options-{index}-position": position, f"options-{index}-text": f"choice {position}"}
    return data


@pytest.mark.parametrize(
    ("positions", "max_choices", "error"),
    [
        ([1, 2, 7], 1, "Options are numbered 1 to 3 without a gap; these are 1, 2, 7."),
        ([1], 1, "A poll has 2 to 10 options; this one has 1."),
        ([1, 2], 3, "Max choices must be between 1 and the number of options (2)."),
    ],
)
def test_a_poll_made_in_the_admin_gets_the_options_the_api_would_give_it(moderator, positions, max_choices, error):
    """The vote path checks a ballot's option against the number of options: with a gap,
    a vote for option 3 was answered 204 and then refused by the worker."""
    get_user_model().objects.get(username="mod").user_permissions.add(
        *Permission.objects.filter(codename__in=["add_poll", "add_option", "change_option"])
    )
    refused = moderator.post("/admin/polls/poll/add/", new_poll_form(positions, max_choices))
    assert refused.status_code == 200 and error in refused.content.decode()
    assert not Poll.objects.exists()
    made = moderator.post("/admin/polls/poll/add/", new_poll_form([2, 1, 3], max_choices=2))
    assert made.status_code == 302
    poll = Poll.objects.get()
    assert list(poll.options.order_by("position").values_list("position", "text")) == [
        (1, "choice 1"),
        (2, "choice 2"),
        (3, "choice 3"),
    ]


def test_a_polls_voting_rules_cannot_be_edited_after_it_is_made(moderator):
    """Edited later, nothing would validate, audit or broadcast them: a deadline moved
    into the past closed the poll with no audit entry and no word to its viewers."""
    poll = make_poll()
    page = moderator.get(f"/admin/polls/poll/{poll.pk}/change/").content.decode()
    for field in ("closes_at", "results_visibility", "one_vote_per", "max_choices"):
        assert f'name="{field}' not in page, field
    options = poll.options.order_by("position")
    data = {
        "question": "Renamed?",
        "closes_at_0": "2020-01-01",
        "closes_at_1": "00:00:00",
        "results_visibility": "after_close",
        "max_choices": 4,
        **management("options", options.count(), options.count()),
        **management("audit_entries", 0),
    }
    for index, option in enumerate(options):
        data |= {
            f"options-{index}-id": option.pk,
            f"options-{index}-poll": poll.pk,
            f"options-{index}-position": option.position,
            f"options-{index}-text": option.text,
        }
    assert moderator.post(f"/admin/polls/poll/{poll.pk}/change/", data).status_code == 302
    poll.refresh_from_db()
    assert (poll.question, poll.closes_at, poll.results_visibility, poll.max_choices) == ("Renamed?", None, "always", 1)


def test_renumbering_the_options_of_a_poll_without_votes_keeps_them_without_a_gap(moderator):
    get_user_model().objects.get(username="mod").user_permissions.add(
        *Permission.objects.filter(codename__in=["view_option", "change_option"])
    )
    poll = make_poll()
    options = list(poll.options.order_by("position"))

    def renumbered(last: int) -> dict:
        data = {
            "question": poll.question,
            **management("options", len(options), len(options)),
            **management("audit_entries", 0),
        }
        for index, option in enumerate(options):
            data |= {
                f"options-{index}-id": option.pk,
                f"options-{index}-poll": poll.pk,
                f"options-{index}-position": last if index == len(options) - 1 else option.position,
                f"options-{index}-text": option.text,
            }
        return data

    refused = moderator.post(f"/admin/polls/poll/{poll.pk}/change/", renumbered(7))
    assert "Options are numbered 1 to 4 without a gap; these are 1, 2, 3, 7." in refused.content.decode()
    assert list(poll.options.order_by("position").values_list("position", flat=True)) == [1, 2, 3, 4]
    assert moderator.post(f"/admin/polls/poll/{poll.pk}/change/", renumbered(4)).status_code == 302


def test_the_delete_page_of_a_poll_with_votes_refuses_without_reading_its_vote_rows(moderator):
    get_user_model().objects.get(username="mod").user_permissions.add(Permission.objects.get(codename="delete_poll"))
    poll = make_poll()
    votes_apply(events=[vote_event(poll, 1 + n % 4) for n in range(50)])
    with CaptureQueriesContext(connection) as queries:
        page = moderator.get(f"/admin/polls/poll/{poll.pk}/delete/")
    assert page.status_code == 200
    assert "your account doesn't have permission to delete the following types of objects" in page.content.decode()
    assert not [q for q in queries if 'FROM "polls_vote"' in q["sql"]]
    assert moderator.post(f"/admin/polls/poll/{poll.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Poll.objects.filter(pk=poll.pk).exists() and Vote.objects.filter(poll=poll).count() == 50


@pytest.mark.parametrize(
    ("question", "texts", "error"),
    [
        ("Made in the admin?", ["Red", "\uff32\uff45\uff44"], "Options 1 and 2 look the same"),
        ("Made in the admin?", ["Red", "\u200b\u2066\u2069"], "Option 2 has no visible text."),
        ("\u200b\u202e", ["Red", "Blue"], "The question has no visible text."),
    ],
)
def test_the_admin_refuses_the_text_the_api_refuses(moderator, question, texts, error):
    get_user_model().objects.get(username="mod").user_permissions.add(
        *Permission.objects.filter(codename__in=["add_poll", "add_option", "change_option"])
    )
    form = new_poll_form([1, 2]) | {"question": question}
    form |= {f"options-{index}-text": text for index, text in enumerate(texts)}
    refused = moderator.post("/admin/polls/poll/add/", form)
    assert refused.status_code == 200 and error in refused.content.decode()
    assert not Poll.objects.exists()
    form |= {"question": "Cafe\u0301 \u202eopen", "options-0-text": "Rose\u0301", "options-1-text": "Blue"}
    assert moderator.post("/admin/polls/poll/add/", form).status_code == 302
    poll = Poll.objects.get()
    assert poll.question == "Caf\u00e9 \u202eopen\u202c"  # as the API stores it
    assert list(poll.options.values_list("text", flat=True)) == ["Ros\u00e9", "Blue"]
    listed = moderator.get("/admin/polls/poll/").content.decode()
    assert "<bdi>Caf\u00e9 \u202eopen\u202c</bdi>" in listed
