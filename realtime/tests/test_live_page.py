"""The live results page in headless Chromium against real server and worker processes."""

from __future__ import annotations

import os
import re
import shutil

import pytest
from playwright.sync_api import expect

from tests.http import request

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

POLL = {
    "question": "Which colour should the new logo be?",
    "option1": "Indigo",
    "option2": "Sky blue",
    "option3": "Emerald",
    "option4": "Amber",
}


def _vote(server, poll_id: int, *options: int) -> None:
    for option in options:
        assert request("POST", f"{server.url}/polls/{poll_id}/vote", {"option": option}).status == 204


def _option(page, position: int):
    return page.locator(f'.option[data-position="{position}"]')


def _keep_screenshot(path, name: str) -> None:
    # Where a reviewer wants to look at the page: POLLING_SCREENSHOTS=<dir>.
    target = os.environ.get("POLLING_SCREENSHOTS")
    if target:
        os.makedirs(target, exist_ok=True)
        shutil.copy(path, os.path.join(target, name))


def test_the_live_page_shows_the_poll_and_its_bars_follow_votes_cast_through_the_api(
    web_server, vote_worker, page, tmp_path
):
    poll_id = request("POST", f"{web_server.url}/polls", POLL).json()["id"]
    _vote(web_server, poll_id, 1)

    page.goto(f"{web_server.url}/polls/{poll_id}/live")
    expect(page.locator("h1")).to_have_text(POLL["question"])
    expect(page.locator(".option .label")).to_have_text(["Indigo", "Sky blue", "Emerald", "Amber"])
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=15_000)
    expect(page.locator("#conn")).to_have_text("Live")
    # The vote before the page opened is there, from the server render or the snapshot.
    expect(page.locator("#total")).to_have_text("1", timeout=15_000)

    _vote(web_server, poll_id, 2, 2, 3, 3, 3, 4)

    expect(page.locator("#total")).to_have_text("7", timeout=30_000)
    expect(_option(page, 1).locator(".count")).to_have_text("1")
    expect(_option(page, 2).locator(".count")).to_have_text("2")
    expect(_option(page, 3).locator(".count")).to_have_text("3")
    expect(_option(page, 3).locator(".pct")).to_have_text("42.9%")
    expect(_option(page, 3)).to_have_class(re.compile(r"\bleading\b"))
    expect(_option(page, 2)).not_to_have_class(re.compile(r"\bleading\b"))
    expect(_option(page, 3).locator(".bar")).to_have_attribute("style", "width: 42.86%;")
    expect(_option(page, 4).locator(".bar")).to_have_attribute("style", "width: 14.29%;")
    page.wait_for_timeout(800)  # let the bars' transition finish before the picture
    shot = tmp_path / "live.png"
    page.screenshot(path=str(shot))
    _keep_screenshot(shot, "live.png")


def test_the_live_page_recovers_after_the_server_restarts(web_server, vote_worker, page, tmp_path):
    poll_id = request("POST", f"{web_server.url}/polls", POLL).json()["id"]
    page.goto(f"{web_server.url}/polls/{poll_id}/live")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=15_000)

    web_server.kill()
    expect(page.locator("#conn")).to_have_attribute("data-state", "offline", timeout=15_000)
    expect(page.locator("#conn-text")).to_contain_text("Reconnecting")
    shot = tmp_path / "offline.png"
    page.screenshot(path=str(shot))
    _keep_screenshot(shot, "live-offline.png")

    web_server.start()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=30_000)
    _vote(web_server, poll_id, 4, 4)
    expect(page.locator("#total")).to_have_text("2", timeout=30_000)
    expect(_option(page, 4).locator(".count")).to_have_text("2")
    expect(_option(page, 4).locator(".pct")).to_have_text("100%")


def test_the_live_page_resyncs_votes_it_missed_while_disconnected(web_server, vote_worker, page):
    poll_id = request("POST", f"{web_server.url}/polls", POLL).json()["id"]
    page.goto(f"{web_server.url}/polls/{poll_id}/live")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=15_000)

    web_server.kill()
    expect(page.locator("#conn")).to_have_attribute("data-state", "offline", timeout=15_000)
    # Votes go in through the worker meanwhile; the page cannot hear about them.
    from testsupport.processes import WebServer

    other = WebServer(env=web_server.env, log_dir=web_server.log_path.parent)
    other.start()
    try:
        _vote(other, poll_id, 1, 1, 2)
    finally:
        other.kill()
    web_server.start()
    expect(page.locator("#total")).to_have_text("3", timeout=30_000)
    expect(_option(page, 1).locator(".count")).to_have_text("2")


def test_the_live_page_of_an_unknown_poll_is_a_404(web_server):
    assert request("GET", f"{web_server.url}/polls/999999/live").status == 404


@pytest.fixture
def unbalanced_poll(transactional_db):
    """A poll whose first option opens a right-to-left override it never closes.

    Written past the service, which would close it (polls.domain.texts.text_normalize): the
    page must isolate the text it is given whatever its origin (rows from before that
    rule, the admin's raw SQL), so this is the worst case it can meet.
    """
    from polls.models import Option, Poll

    poll = Poll.objects.create(question="\u202eWhich one?")
    Option.objects.bulk_create(
        [Option(poll=poll, position=1, text="\u202eevil txt"), Option(poll=poll, position=2, text="Blue")]
    )
    return poll


def _label_layout(page, position: int) -> dict:
    """Where the option's text sits in its label, whose ::after is the "Leading" badge."""
    return page.evaluate(
        """(position) => {
            const label = document.querySelector(`.option[data-position="${position}"] .label`);
            const text = document.createRange();
            text.selectNodeContents(label.firstElementChild);
            const box = label.getBoundingClientRect(), inner = text.getBoundingClientRect();
            return {textLeft: inner.left - box.left, badgeRoom: box.right - inner.right,
                    badge: getComputedStyle(label, "::after").content};
        }""",
        position,
    )


def test_a_right_to_left_override_in_an_option_does_not_move_the_leading_badge(
    web_server, vote_worker, unbalanced_poll, page
):
    _vote(web_server, unbalanced_poll.pk, 1)
    page.goto(f"{web_server.url}/polls/{unbalanced_poll.pk}/live")
    expect(_option(page, 1)).to_have_class(re.compile(r"\bleading\b"), timeout=30_000)
    layout = _label_layout(page, 1)
    # The text first, at the label's left edge, the badge after it on the right: the
    # override reverses the option's own text only.
    assert layout["badge"] == '"Leading"'
    assert layout["textLeft"] < 1 and layout["badgeRoom"] > 40, layout
