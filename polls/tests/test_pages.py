"""The audience's pages without JavaScript: home and create, vote by form POST, share, presenter, QR."""

from __future__ import annotations

import re
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from polling.throttles import throttles_forget
from polls.domain.services import poll_create, poll_set_hidden, poll_set_status
from polls.domain.voters import COOKIE_NAME
from polls.models import Poll
from polls.tests.factories import counts, make_poll

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser(in_process_bus):
    """A client that must pass Django's CSRF check, as a browser does; votes counted in process."""
    throttles_forget()
    cache.clear()
    return Client(HTTP_HOST="localhost", enforce_csrf_checks=True)


def csrf_token(client: Client, path: str) -> str:
    """The token of the page's form (GET sets the cookie it pairs with)."""
    page = client.get(path)
    assert page.status_code == 200
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)


def vote_by_form(client: Client, poll: Poll, **form):
    token = csrf_token(client, "/")  # the ballot's page may show results instead of a form
    return client.post(f"/p/{poll.pk}", {"csrfmiddlewaretoken": token, **form})


def text(response) -> str:
    return re.sub(r"\s+", " ", response.content.decode())


# --- home and create -------------------------------------------------------------------------


def test_home_lists_open_visible_polls_and_offers_the_create_form(browser):
    shown = make_poll("Shown?")
    closed = make_poll("Closed?")
    poll_set_status(poll=closed, status=Poll.Status.CLOSED)
    hidden = make_poll("Hidden?")
    poll_set_hidden(poll=hidden, hidden=True)
    page = text(browser.get("/"))
    assert f'href="/p/{shown.pk}"' in page and "Shown?" in page
    assert "Closed?" not in page and "Hidden?" not in page
    assert 'name="csrfmiddlewaretoken"' in page and 'name="option10"' in page


def test_creating_a_poll_on_home_calls_poll_create_and_lands_on_its_share_view(browser):
    token = csrf_token(browser, "/")
    response = browser.post(
        "/",
        {
            "csrfmiddlewaretoken": token,
            "question": "Lunch?",
            "option1": "Soup",
            "option2": "Salad",
            "option3": "",
            "option6": "Pie",
            "multiple": "1",
            "closes_in": "15",
            "results_visibility": "after_vote",
            "one_vote_per": "voter",
        },
    )
    poll = Poll.objects.get(question="Lunch?")
    assert response.status_code == 302 and response["Location"] == f"/p/{poll.pk}/share"
    assert [o.text for o in poll.options.order_by("position")] == ["Soup", "Salad", "Pie"]
    assert poll.max_choices == 3
    assert poll.results_visibility == "after_vote" and poll.one_vote_per == "voter"
    assert timedelta(minutes=14) < poll.closes_at - timezone.now() <= timedelta(minutes=15)


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"question": "One?", "option1": "Only"}, "A poll has 2 to 10 options; this one has 1."),
        ({"question": "", "option1": "a", "option2": "b"}, "This field may not be blank."),
        ({"question": "When?", "option1": "a", "option2": "b", "closes_in": "7"}, "Datetime has wrong format"),
    ],
)
def test_a_refused_poll_is_not_created_and_the_form_says_why_with_the_apis_rules(browser, form, message):
    token = csrf_token(browser, "/")
    response = browser.post("/", {"csrfmiddlewaretoken": token, **form})
    assert response.status_code == 400
    assert message in text(response)
    assert "The poll was not created" in text(response)
    assert not Poll.objects.exists()
    # What was typed is kept.
    assert f'value="{form["option1"]}"' in text(response)


def test_creating_without_the_csrf_token_is_refused(browser):
    response = browser.post("/", {"question": "Forged?", "option1": "a", "option2": "b"})
    assert response.status_code == 403
    assert not Poll.objects.exists()


# --- voting by form ----------------------------------------------------------------------------


def test_a_single_choice_poll_offers_one_submit_button_per_option(browser):
    poll = make_poll()
    page = text(browser.get(f"/p/{poll.pk}"))
    assert re.findall(r'<button class="choice" type="submit" name="option" value="(\d+)">', page) == [
        "1",
        "2",
        "3",
        "4",
    ]
    assert "Tap your answer" in page
    assert 'id="live"' not in page  # the results come after the vote


def test_a_form_vote_is_counted_and_leads_to_the_results(browser):
    poll = make_poll()
    response = vote_by_form(browser, poll, option="3")
    assert response.status_code == 303 and response["Location"] == f"/p/{poll.pk}"
    assert COOKIE_NAME in response.cookies  # the new voter's token, as the API hands it out
    assert counts(poll) == [0, 0, 1, 0]
    page = text(browser.get(f"/p/{poll.pk}"))
    assert "Your vote is in." in page
    assert 'id="live"' in page and 'name="option"' not in page
    assert re.search(r'data-position="3">.*?<span class="count">1</span>', page)
    assert "Vote again" in page  # one_vote_per=none: nothing stops a second ballot


def test_a_form_vote_without_the_csrf_token_is_refused_and_not_counted(browser):
    poll = make_poll()
    browser.get(f"/p/{poll.pk}")
    assert browser.post(f"/p/{poll.pk}", {"option": "1"}).status_code == 403
    assert counts(poll) == [0, 0, 0, 0]


def test_a_second_ballot_in_a_one_vote_per_voter_poll_is_refused_with_409_and_why(browser):
    poll = poll_create(question="Once?", options=["a", "b"], one_vote_per=Poll.OneVotePer.VOTER)
    assert vote_by_form(browser, poll, option="1").status_code == 303
    page = browser.get(f"/p/{poll.pk}")
    assert 'name="option"' not in text(page)  # this voter has voted: the results instead
    again = vote_by_form(browser, poll, option="2")
    assert again.status_code == 409
    assert "You have already voted in poll" in text(again)
    assert counts(poll) == [1, 0]


def test_a_closed_poll_shows_no_ballot_and_refuses_a_vote_with_409(browser):
    poll = make_poll()
    token = csrf_token(browser, f"/p/{poll.pk}")
    poll_set_status(poll=poll, status=Poll.Status.CLOSED)
    page = text(browser.get(f"/p/{poll.pk}"))
    assert "This poll is closed" in page and 'name="option"' not in page
    refused = browser.post(f"/p/{poll.pk}", {"csrfmiddlewaretoken": token, "option": "1"})
    assert refused.status_code == 409
    assert "is closed to votes" in text(refused)
    assert counts(poll) == [0, 0, 0, 0]


def test_a_poll_for_signed_in_users_asks_an_anonymous_voter_to_sign_in(browser):
    poll = poll_create(question="Members?", options=["a", "b"], one_vote_per=Poll.OneVotePer.USER)
    assert "sign in to vote" in text(browser.get(f"/p/{poll.pk}"))
    refused = vote_by_form(browser, poll, option="1")
    assert refused.status_code == 401
    assert "Sign in to vote in this poll" in text(refused)
    assert counts(poll) == [0, 0]


def test_a_multiple_choice_ballot_is_chosen_then_sent(browser):
    poll = poll_create(question="Talks?", options=["a", "b", "c"], max_choices=2)
    page = text(browser.get(f"/p/{poll.pk}"))
    assert page.count('type="checkbox" name="options"') == 3 and "Choose up to 2" in page
    too_many = vote_by_form(browser, poll, options=["1", "2", "3"])
    assert too_many.status_code == 409 and "At most 2 options may be chosen" in text(too_many)
    none = vote_by_form(browser, poll)
    assert none.status_code == 400 and "Choose an option first." in text(none)
    assert vote_by_form(browser, poll, options=["1", "3"]).status_code == 303
    assert counts(poll) == [1, 0, 1]


def test_an_option_that_is_not_a_number_or_not_in_the_poll_is_a_400(browser):
    poll = make_poll()
    assert vote_by_form(browser, poll, option="x").status_code == 400
    out = vote_by_form(browser, poll, option="9")
    assert out.status_code == 409 and "Option 9 does not exist" in text(out)


def test_form_votes_pass_the_apis_rate_limits(browser, settings):
    settings.RATE_LIMIT_VOTES_PER_VOTER = "1/hour"
    poll = make_poll()
    # The first vote mints the voter's token, counted among the address's new voters;
    # the voter's own window starts with the second.
    assert [vote_by_form(browser, poll, option="1").status_code for _ in range(2)] == [303, 303]
    limited = vote_by_form(browser, poll, option="1")
    assert limited.status_code == 429
    assert "Too many votes from here" in text(limited) and int(limited["Retry-After"]) >= 1
    assert counts(poll) == [2, 0, 0, 0]


def test_after_vote_results_show_to_the_voter_once_counted(browser):
    poll = poll_create(question="Secret?", options=["a", "b"], results_visibility=Poll.Visibility.AFTER_VOTE)
    vote_by_form(browser, poll, option="2")
    page = text(browser.get(f"/p/{poll.pk}"))
    assert re.search(r'data-position="2">.*?<span class="count">1</span>', page)
    assert "data-await-results" not in page  # counted in process already: nothing to wait for


def test_unknown_and_hidden_polls_are_404(browser):
    hidden = make_poll()
    poll_set_hidden(poll=hidden, hidden=True)
    for path in (
        "/p/999999",
        f"/p/{hidden.pk}",
        f"/p/{hidden.pk}/share",
        f"/p/{hidden.pk}/present",
        "/p/999999/qr.svg",
    ):
        assert browser.get(path).status_code == 404, path


# --- share, presenter, QR code -------------------------------------------------------------------


def test_the_share_view_gives_the_vote_link_its_qr_code_and_the_presenter_view(browser):
    poll = make_poll()
    page = text(browser.get(f"/p/{poll.pk}/share"))
    assert f'href="http://localhost/p/{poll.pk}"' in page
    assert f'src="/p/{poll.pk}/qr.svg"' in page
    assert f'href="/p/{poll.pk}/present"' in page


def test_the_qr_code_is_an_svg_of_the_vote_link(browser):
    poll = make_poll()
    response = browser.get(f"/p/{poll.pk}/qr.svg")
    assert response.status_code == 200 and response["Content-Type"] == "image/svg+xml"
    body = response.content.decode()
    assert body.startswith("<svg") and "<path" in body and "QR code of the vote link" in body


def test_the_presenter_view_shows_live_results_the_qr_code_the_link_and_the_count(browser):
    poll = make_poll()
    vote_by_form(browser, poll, option="1")
    page = text(Client(HTTP_HOST="localhost").get(f"/p/{poll.pk}/present"))
    assert 'id="live"' in page and f'data-poll-id="{poll.pk}"' in page
    assert f'src="/p/{poll.pk}/qr.svg"' in page and f"http://localhost/p/{poll.pk}" in page
    assert '<strong id="total">1</strong>' in page
    assert "/static/realtime/live.js" in page


# --- Content-Security-Policy without unsafe-inline ------------------------------------------------


class _InlineFinder(HTMLParser):
    """Collects what a CSP without unsafe-inline would block: inline scripts, styles, handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "style":
            self.found.append("<style>")
        if tag == "script" and "src" not in attributes and attributes.get("type") != "application/json":
            self.found.append("inline <script>")
        self.found.extend(f"{tag} {name}=" for name in attributes if name == "style" or name.startswith("on"))
        if tag == "link" and (attributes.get("href") or "").startswith(("http:", "https:", "//")):
            self.found.append(f"a file from elsewhere: {attributes['href']}")


@pytest.mark.parametrize(
    "path", ["/", "/p/{id}", "/p/{id}?voted", "/p/{id}/share", "/p/{id}/present", "/polls/{id}/live"]
)
def test_pages_have_no_inline_script_or_style(browser, path):
    poll = make_poll()
    if path.endswith("?voted"):
        vote_by_form(browser, poll, option="1")
        path = path.removesuffix("?voted")
    finder = _InlineFinder()
    finder.feed(browser.get(path.format(id=poll.pk)).content.decode())
    assert finder.found == []


def test_the_pages_static_files_are_served_by_the_project(browser):
    for path in (
        "/static/realtime/live.js",
        "/static/realtime/live.css",
        "/static/polls/audience.css",
        "/static/realtime/favicon.svg",
    ):
        response = browser.get(path)
        assert response.status_code == 200, path
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert body.strip(), path
