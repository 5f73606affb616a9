"""POST /voters: no page of another site can replace a browser's voter cookie."""

import pytest
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client

from polls.domain.voters import COOKIE_NAME, voter_token_read

pytestmark = pytest.mark.django_db

REFUSED = (
    "Send this request with Content-Type: application/json (not {}; the body may be empty), or with a CSRF "
    "token: a form of another site must not replace your voter cookie."
)


@pytest.fixture
def browser():
    """A browser that already holds a voter cookie (and checks CSRF as a real one does)."""
    client = Client(HTTP_HOST="localhost", enforce_csrf_checks=True)
    issued = client.post("/voters", content_type="application/json")
    assert issued.status_code == 201
    return client


@pytest.mark.parametrize(
    "content_type, body",
    [
        # What <form method=post enctype=...> sends, and a fetch() with a bare body.
        ("text/plain", '{"x": "y"}'),
        ("text/plain; charset=utf-8", "a=b"),
        ("application/x-www-form-urlencoded", "a=b"),
        ("multipart/form-data; boundary=xyz", "--xyz--"),
        ("", ""),
    ],
)
def test_a_cross_site_form_gets_415_and_the_voter_cookie_stays(browser, content_type, body):
    before = browser.cookies[COOKIE_NAME].value
    response = browser.post("/voters", body, content_type=content_type, HTTP_ORIGIN="https://evil.example")
    assert response.status_code == 415
    assert response.json() == {"detail": REFUSED.format(content_type.split(";")[0] or "none")}
    assert COOKIE_NAME not in response.cookies
    assert browser.cookies[COOKIE_NAME].value == before


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"])
def test_json_gets_a_new_voter_token_and_cookie(browser, content_type):
    before = browser.cookies[COOKIE_NAME].value
    response = browser.post("/voters", "{}", content_type=content_type)
    assert response.status_code == 201
    token = response.json()["voter_token"]
    assert voter_token_read(token) is not None
    assert response.cookies[COOKIE_NAME].value == token != before
    assert response.cookies[COOKIE_NAME]["samesite"] == "Lax"


def test_a_form_of_this_site_with_its_csrf_token_gets_a_voter_token():
    client = Client(HTTP_HOST="localhost", enforce_csrf_checks=True)
    secret = _get_new_csrf_string()
    client.cookies["csrftoken"] = secret
    response = client.post("/voters", "a=b", content_type="application/x-www-form-urlencoded", HTTP_X_CSRFTOKEN=secret)
    assert response.status_code == 201
    forged = client.post(
        "/voters", "a=b", content_type="application/x-www-form-urlencoded", HTTP_X_CSRFTOKEN=_get_new_csrf_string()
    )
    assert forged.status_code == 415
