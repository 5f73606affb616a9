"""The audience's pages in headless Chromium, against a real web process and the vote worker.

A presenter at a desktop creates a poll on / and opens its presenter view; a phone opens
the share link in another browser context and votes; the presenter view shows the vote
live. A phone without JavaScript votes by plain form POST. Every page is checked with
axe-core (no serious or critical violation), and screenshots go to test-artifacts/.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from testsupport.browser import DESKTOP, PHONE, axe_violations, chromium, keep_screenshot
from testsupport.processes import WebServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


@pytest.fixture
def site(process_env, vote_worker, tmp_path):
    """The web process over plain http (so cookies are not marked Secure), and the worker."""
    server = WebServer(env={**process_env, "SESSION_COOKIE_SECURE": "0", "CSRF_COOKIE_SECURE": "0"}, log_dir=tmp_path)
    server.start()
    yield server
    server.kill()


def check_accessible(page, name: str) -> None:
    keep_screenshot(page, name)
    assert axe_violations(page) == [], name


def test_a_poll_created_on_home_is_voted_from_a_phone_and_the_presenter_view_shows_it_live(site):
    with chromium() as browser:
        desk = browser.new_context(**DESKTOP).new_page()
        desk.goto(f"{site.url}/")
        check_accessible(desk, "desktop-home")
        desk.get_by_label("Question").fill("Which colour should the new logo be?")
        for number, text in enumerate(["Indigo", "Sky blue", "Emerald"], start=1):
            desk.get_by_label(f"Option {number}", exact=True).fill(text)
        desk.get_by_label("Votes allowed").select_option("voter")
        desk.get_by_role("button", name="Create and share").click()

        expect(desk).to_have_url(re.compile(r"/p/\d+/share$"))
        vote_link = desk.locator("#vote-link").get_attribute("href")
        assert re.fullmatch(rf"{re.escape(site.url)}/p/\d+", vote_link)
        expect(desk.locator("img.qr")).to_have_js_property("complete", True)
        assert desk.locator("img.qr").evaluate("img => img.naturalWidth") > 0
        check_accessible(desk, "desktop-share")

        desk.get_by_role("link", name="Present full screen").click()
        expect(desk.locator("#conn")).to_have_attribute("data-state", "live", timeout=15_000)
        expect(desk.locator("#total")).to_have_text("0")
        check_accessible(desk, "desktop-present-before")

        phone = browser.new_context(**PHONE).new_page()
        phone.goto(f"{site.url}/")
        check_accessible(phone, "phone-home")
        phone.goto(vote_link)
        expect(phone.get_by_role("button", name="Emerald")).to_be_visible()
        check_accessible(phone, "phone-vote")
        phone.get_by_role("button", name="Emerald").tap()

        expect(phone.get_by_role("status").filter(has_text="Your vote is in")).to_be_visible()
        expect(phone.locator("#conn")).to_have_attribute("data-state", "live", timeout=15_000)
        expect(phone.locator("#total")).to_have_text("1", timeout=30_000)
        expect(phone.get_by_role("button", name="Emerald")).to_have_count(0)  # one vote per voter: no ballot now
        check_accessible(phone, "phone-voted")

        # The presenter's page heard it over its WebSocket: no reload.
        expect(desk.locator("#total")).to_have_text("1", timeout=30_000)
        emerald = desk.locator('.option[data-position="3"]')
        expect(emerald.locator(".count")).to_have_text("1")
        expect(emerald).to_have_class(re.compile(r"\bleading\b"))
        desk.wait_for_timeout(700)  # the bar's transition, for the picture only
        check_accessible(desk, "desktop-present-after")

        # A second tap from the same phone is refused and says why.
        phone.goto(vote_link)
        expect(phone.get_by_role("button", name="Emerald")).to_have_count(0)


def test_a_phone_without_javascript_votes_by_form_post(site):
    from tests.http import request

    poll = request(
        "POST",
        f"{site.url}/polls",
        {
            "question": "Which talks will you attend?",
            "options": ["Kafka", "Channels", "PostgreSQL"],
            "max_choices": 2,
        },
    ).json()
    with chromium() as browser:
        phone = browser.new_context(**PHONE, java_script_enabled=False).new_page()
        phone.goto(f"{site.url}/p/{poll['id']}")
        phone.get_by_role("checkbox", name="Kafka").check()
        phone.get_by_role("checkbox", name="PostgreSQL").check()
        phone.get_by_role("checkbox", name="Channels").check()
        phone.get_by_role("button", name="Send my vote").click()
        # Three of two: refused, and the page says why.
        expect(phone.get_by_role("alert")).to_have_text(re.compile("At most 2 options may be chosen"))
        keep_screenshot(phone, "phone-nojs-refused")

        phone.get_by_role("checkbox", name="Channels").uncheck()
        phone.get_by_role("button", name="Send my vote").click()
        expect(phone.get_by_role("status").filter(has_text="Your vote is in")).to_be_visible()
        expect(phone.locator("#results-title")).to_be_visible()
        keep_screenshot(phone, "phone-nojs-voted")

    def counted() -> list[int]:
        return [o["count"] for o in request("GET", f"{site.url}/polls/{poll['id']}").json()["options"]]

    from testsupport.processes import wait_until

    wait_until(lambda: counted() == [1, 0, 1], timeout=30, what="the form's ballot counted")


def test_an_after_vote_poll_shows_the_voter_the_results_once_the_vote_is_counted(site):
    from tests.http import request

    poll = request(
        "POST",
        f"{site.url}/polls",
        {
            "question": "Secret ballot?",
            "option1": "Yes",
            "option2": "No",
            "results_visibility": "after_vote",
        },
    ).json()
    with chromium() as browser:
        phone = browser.new_context(**PHONE).new_page()
        phone.goto(f"{site.url}/p/{poll['id']}")
        phone.get_by_role("button", name="No").tap()
        expect(phone.get_by_role("status").filter(has_text="Your vote is in")).to_be_visible()
        # Accepted before the worker counted it: the page asks again until the counts show.
        expect(phone.locator("#hidden-note")).to_be_hidden(timeout=30_000)
        expect(phone.locator('.option[data-position="2"] .count')).to_have_text("1")
        expect(phone.locator("#conn")).to_have_attribute("data-state", "live")
        keep_screenshot(phone, "phone-after-vote-counted")


# The policy the project is to send (no unsafe-inline anywhere), added here to every answer.
STRICT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def test_the_pages_work_under_a_content_security_policy_without_unsafe_inline(site):
    from tests.http import request

    poll = request("POST", f"{site.url}/polls", {"question": "Strict?", "option1": "Yes", "option2": "No"}).json()
    # A page answered through Playwright's route counts as from a public address, and
    # Chromium then blocks its WebSocket to 127.0.0.1 (local network access checks).
    with chromium("--disable-features=LocalNetworkAccessChecks") as browser:
        context = browser.new_context(**DESKTOP)

        def with_policy(route):
            response = route.fetch()
            route.fulfill(response=response, headers={**response.headers, "content-security-policy": STRICT_CSP})

        context.route("**/*", with_policy)
        page = context.new_page()
        refused = []
        page.on(
            "console",
            lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None,
        )
        for path in ("/", f"/p/{poll['id']}/share", f"/p/{poll['id']}/present", f"/polls/{poll['id']}/live"):
            page.goto(f"{site.url}{path}")
            if path != "/" and not path.endswith("/share"):
                expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=15_000)
        page.goto(f"{site.url}/p/{poll['id']}")
        page.get_by_role("button", name="Yes").click()
        expect(page.locator("#total")).to_have_text("1", timeout=30_000)
        expect(page.locator('.option[data-position="1"] .bar')).to_have_attribute("style", "width: 100%;")
        assert refused == []
