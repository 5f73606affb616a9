"""Admin logins are throttled (django-axes): wrong passwords lock a username and address out."""

from __future__ import annotations

import http.cookiejar
import os
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.test import Client

from testsupport.processes import REPO, WebServer

PASSWORD = "a-long-moderator-password"
LOCKED = b"Account locked: too many login attempts."


def login(client: Client, password: str, username: str = "mod"):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password})


@pytest.fixture
def moderator(db):
    return get_user_model().objects.create_user("mod", password=PASSWORD, is_staff=True)


def test_wrong_passwords_then_the_right_one_is_refused_for_a_while(moderator):
    attacker = Client(HTTP_HOST="localhost", REMOTE_ADDR="203.0.113.7")
    limit = django_settings.AXES_FAILURE_LIMIT
    answers = [login(attacker, f"guess-{n}").status_code for n in range(limit - 1)]
    assert answers == [200] * (limit - 1)  # the login form again, with its error
    locked = login(attacker, "guess-last")
    assert (locked.status_code, LOCKED in locked.content) == (429, True)
    right = login(attacker, PASSWORD)
    assert (right.status_code, LOCKED in right.content) == (429, True)
    assert attacker.get("/admin/").status_code == 302  # not signed in
    assert AccessAttempt.objects.get(username="mod", ip_address="203.0.113.7").failures_since_start == limit + 1

    # Another address is not locked out: one attacker cannot lock every moderator out.
    colleague = Client(HTTP_HOST="localhost", REMOTE_ADDR="198.51.100.2")
    assert login(colleague, PASSWORD).status_code == 302
    assert colleague.get("/admin/").status_code == 200

    # Once the lockout time has passed since the last try, the right password works again.
    AccessAttempt.objects.update(
        attempt_time=AccessAttempt.objects.get().attempt_time - django_settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    )
    assert login(attacker, PASSWORD).status_code == 302
    assert attacker.get("/admin/").status_code == 200


def test_the_lockout_settings_come_from_the_environment():
    env = {**os.environ, "DEBUG": "1", "ADMIN_LOGIN_FAILURE_LIMIT": "3", "ADMIN_LOGIN_LOCKOUT_MINUTES": "2.5"}
    code = (
        "from django.conf import settings; "
        "print(settings.AXES_FAILURE_LIMIT, settings.AXES_COOLOFF_TIME.total_seconds(), "
        "settings.AXES_LOCKOUT_PARAMETERS)"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.stdout.strip().splitlines()[-1] == "3 150.0 [['username', 'ip_address']]", result.stderr


def test_the_embedded_sqlite_mode_throttles_admin_logins_too(tmp_path):
    env = {
        name: value for name, value in os.environ.items() if name not in ("DATABASE_URL", "KAFKA_BROKERS", "REDIS_URL")
    }
    env.update(
        DEBUG="1",
        SQLITE_PATH=str(tmp_path / "db.sqlite3"),
        ADMIN_LOGIN_FAILURE_LIMIT="3",
        DJANGO_SUPERUSER_PASSWORD=PASSWORD,
        PYTHONUNBUFFERED="1",
    )
    for command in (
        ["migrate", "--no-input"],
        ["createsuperuser", "--no-input", "--username", "mod", "--email", "m@example.com"],
    ):
        done = subprocess.run(
            [sys.executable, "manage.py", *command], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    server = WebServer(env=env, log_dir=tmp_path)
    server.start()
    try:
        browser = _Browser(server.url)
        statuses = [browser.login(f"guess-{n}") for n in range(3)]
        assert statuses[:2] == [200, 200] and statuses[2] == 429
        assert browser.login(PASSWORD) == 429
        assert _Browser(server.url).login(PASSWORD) == 429  # a new session from the same address
    finally:
        server.kill()


class _Browser:
    """A browser session on the admin's login form: its cookies and CSRF token."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _NoRedirect()
        )

    def login(self, password: str) -> int:
        page = self.opener.open(f"{self.url}/admin/login/", timeout=30).read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        body = urllib.parse.urlencode(
            {"username": "mod", "password": password, "csrfmiddlewaretoken": token, "next": "/admin/"}
        ).encode()
        request = urllib.request.Request(
            f"{self.url}/admin/login/", data=body, method="POST", headers={"Referer": f"{self.url}/admin/login/"}
        )
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None
