"""The HTML pages under the Content-Security-Policy, in headless Chromium against a real server.

The `page` fixture fails a test whose pages break the policy; these tests check that
each page still does its work under it. The live page's are in realtime/tests/test_live_page.py.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from tests.http import request

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

POLL = {"question": "Which colour should the new logo be?", "option1": "Indigo", "option2": "Amber"}


def test_the_probes_and_metrics_of_a_real_server_carry_the_security_headers(web_server):
    for path in ("/healthz", "/readyz", "/metrics", "/leaderboard"):
        headers = {name.lower(): value for name, value in request("GET", f"{web_server.url}{path}").headers.items()}
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["x-frame-options"] == "DENY", path
        assert headers["referrer-policy"] == "same-origin", path
        assert headers["cross-origin-opener-policy"] == "same-origin", path
        assert "default-src 'self'" in headers["content-security-policy"], path


def test_swagger_ui_renders_the_api_under_the_content_security_policy(web_server, page):
    page.goto(f"{web_server.url}/api/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Polling API", timeout=15_000)
    expect(page.locator(".opblock-summary-path a", has_text="/leaderboard")).to_be_visible()
    # "Try it out" runs a request from the page (connect-src).
    page.locator(".opblock-summary", has_text="/leaderboard").first.click()
    page.get_by_role("button", name="Try it out").click()
    page.get_by_role("button", name="Execute").click()
    expect(page.locator(".live-responses-table tbody .response-col_status")).to_have_text("200", timeout=15_000)


@pytest.fixture
def moderator(transactional_db):
    # Made before the browser starts: its event loop would make Django refuse the query.
    return get_user_model().objects.create_superuser("moderator", password="a-long-test-password-1")


def test_the_admin_works_under_the_content_security_policy(web_server, moderator, page):
    poll_id = request("POST", f"{web_server.url}/polls", POLL).json()["id"]

    page.goto(f"{web_server.url}/admin/")
    page.fill("#id_username", "moderator")
    page.fill("#id_password", "a-long-test-password-1")
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_be_visible()
    page.goto(f"{web_server.url}/admin/polls/poll/")
    expect(page.locator("#result_list")).to_contain_text(POLL["question"])
    # The actions bar's script (select all, the counter) runs.
    page.check("#action-toggle")
    expect(page.locator(".action-counter")).to_contain_text("1 of 1 selected")
    page.goto(f"{web_server.url}/admin/polls/poll/{poll_id}/change/")
    expect(page.locator("body")).to_contain_text("Indigo")
    # The add form's date widgets draw their calendar from a script.
    page.goto(f"{web_server.url}/admin/polls/poll/add/")
    page.locator(".datetimeshortcuts a", has_text="Today").click()
    expect(page.locator("#id_closes_at_0")).not_to_have_value("")
    page.goto(f"{web_server.url}/admin/polls/vote/")
    expect(page.locator("#changelist")).to_be_visible()
