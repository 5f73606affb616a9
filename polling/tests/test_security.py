"""Rate limits, authentication for poll creation, and the production settings."""

import json
import os
import subprocess
import sys

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client
from rest_framework.authtoken.models import Token

from polling.throttles import throttles_forget
from polls.tests.factories import make_poll
from testsupport.processes import REPO

pytestmark = pytest.mark.django_db


@pytest.fixture
def client():
    # Rate-limit windows live in the shared cache (the test run's Redis) and in this
    # process's counts of it.
    throttles_forget()
    cache.clear()
    return Client(HTTP_HOST="localhost")


def test_votes_over_the_per_address_limit_get_429_with_retry_after(client, settings, in_process_bus):
    settings.RATE_LIMIT_VOTES_PER_ADDRESS = "5/hour"  # an hour: the requests cannot straddle two windows
    poll = make_poll()
    statuses = [
        client.post(f"/polls/{poll.pk}/vote", '{"option": 1}', content_type="application/json").status_code
        for _ in range(7)
    ]
    assert statuses == [204] * 5 + [429] * 2
    limited = client.post(f"/polls/{poll.pk}/vote", '{"option": 1}', content_type="application/json")
    assert limited.status_code == 429
    assert 1 <= int(limited["Retry-After"]) <= 3600
    assert limited.json()["detail"].startswith("Request was throttled.")
    assert poll.options.get(position=1).votes == 5


def test_votes_over_the_per_voter_limit_get_429(client, settings, in_process_bus):
    settings.RATE_LIMIT_VOTES_PER_VOTER = "2/hour"
    poll = make_poll()
    token = client.post("/voters", content_type="application/json").json()["voter_token"]
    other = client.post("/voters", content_type="application/json").json()["voter_token"]

    def cast(voter):
        return client.post(
            f"/polls/{poll.pk}/vote", '{"option": 2}', content_type="application/json", HTTP_X_VOTER_TOKEN=voter
        ).status_code

    assert [cast(token) for _ in range(3)] == [204, 204, 429]
    assert cast(other) == 204  # another voter on the same address is not affected


def test_poll_creation_over_the_limit_gets_429(client, settings):
    settings.RATE_LIMIT_POLLS_PER_ADDRESS = "2/hour"
    body = json.dumps({"question": "q", "option1": "a", "option2": "b"})
    assert [client.post("/polls", body, content_type="application/json").status_code for _ in range(3)] == [
        201,
        201,
        429,
    ]


def test_poll_creation_can_require_authentication(client, settings):
    settings.POLLS_CREATE_REQUIRES_AUTH = True
    body = json.dumps({"question": "q", "option1": "a", "option2": "b"})
    refused = client.post("/polls", body, content_type="application/json")
    assert (refused.status_code, refused.json()) == (401, {"detail": "Authentication credentials were not provided."})
    user = get_user_model().objects.create_user("maker")
    token = Token.objects.create(user=user).key
    created = client.post("/polls", body, content_type="application/json", HTTP_AUTHORIZATION=f"Token {token}")
    assert created.status_code == 201
    assert client.get("/polls").status_code == 200  # reading stays open


PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "a-production-secret-of-more-than-fifty-characters-with-variety-7Hq2#",
    "ALLOWED_HOSTS": "polls.example.com",
    "SECURE_SSL_REDIRECT": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "SECURE_HSTS_PRELOAD": "1",
    "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https",
}


def manage(*args, env):
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True)


def test_check_deploy_passes_with_the_production_settings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env={**os.environ, **PRODUCTION})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


@pytest.mark.parametrize(
    "missing, message",
    [
        ("SECRET_KEY", "The environment variable SECRET_KEY is required but not set."),
        ("ALLOWED_HOSTS", "ALLOWED_HOSTS must list the host names served when DEBUG is off."),
    ],
)
def test_production_mode_refuses_to_start_without_a_required_setting(missing, message):
    env = {**os.environ, **PRODUCTION}
    env.pop(missing)
    result = manage("check", env=env)
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.parametrize(
    "path, host",
    [
        ("/leaderboard", "localhost"),
        ("/polls/{poll}/live", "localhost"),
        ("/admin/login/", "localhost"),
        ("/api/docs", "localhost"),
        ("/api/docs?script=", "localhost"),
        ("/api/schema", "localhost"),
        ("/static/realtime/live.js", "localhost"),
        ("/no/such/page", "localhost"),
        ("/healthz", "10.1.2.3:8000"),  # answered ahead of the rest of the chain, by IP
        ("/metrics", "10.1.2.3:8000"),
        ("/leaderboard", "evil.example"),  # refused by the Host check
    ],
)
def test_every_response_carries_the_security_headers_and_a_csp_without_inline_code(client, path, host):
    poll = make_poll()
    response = client.get(path.format(poll=poll.pk), HTTP_HOST=host)
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    policy = dict(directive.split(" ", 1) for directive in response["Content-Security-Policy"].split("; "))
    assert policy["default-src"] == policy["script-src"] == policy["style-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
    assert "unsafe" not in response["Content-Security-Policy"]


def test_the_html_pages_load_their_scripts_and_styles_from_files(client):
    poll = make_poll()
    pages = [client.get(f"/polls/{poll.pk}/live"), client.get("/api/docs"), client.get("/admin/login/")]
    for response in pages:
        html = response.content.decode()
        assert response.status_code == 200 and "text/html" in response["Content-Type"]
        assert "<style" not in html and " style=" not in html
        # Only data blocks (json_script) may sit inline; every script has a src.
        assert html.count("<script") == html.count("<script src=") + html.count(
            '<script id="initial-poll" type="application/json">'
        )


def test_votes_go_on_when_the_rate_limit_cache_is_down(client, settings, in_process_bus, services):
    settings.RATE_LIMIT_VOTES_PER_ADDRESS = "5/hour"
    poll = make_poll()
    services.redis.stop()
    try:
        statuses = [
            client.post(f"/polls/{poll.pk}/vote", '{"option": 3}', content_type="application/json").status_code
            for _ in range(3)
        ]
    finally:
        services.redis.start()
    assert statuses == [204, 204, 204]
    assert poll.options.get(position=3).votes == 3
