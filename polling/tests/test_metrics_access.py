"""/metrics only for operators: loopback (no proxy in between), allowed networks, or a bearer token."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from polling.env import env_networks
from polling.metrics import METRICS_REFUSED
from polls.domain.services import poll_create
from polls.models import Poll
from tests.http import request
from testsupport.processes import REPO, WebServer

OUTSIDER = "203.0.113.7"
TOKEN = "a-metrics-token-of-32-characters"
REFUSED = (403, {"detail": METRICS_REFUSED})


def scrape(address: str = "127.0.0.1", **headers):
    return Client().get("/metrics", REMOTE_ADDR=address, HTTP_HOST="10.0.0.5:8000", **headers)


def test_by_default_only_loopback_without_a_proxy_reads_the_metrics():
    for address in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        assert scrape(address).status_code == 200, address
    for address in (OUTSIDER, "10.0.0.9", "::ffff:203.0.113.7", "2001:db8::1", ""):
        answer = scrape(address)
        assert (answer.status_code, answer.json()) == REFUSED, address
        assert b"polling_" not in answer.content
    # A reverse proxy on the same machine connects from loopback for every client.
    for header in ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP"):
        answer = scrape("127.0.0.1", **{header: OUTSIDER})
        assert (answer.status_code, answer.json()) == REFUSED, header
    assert Client().head("/metrics", REMOTE_ADDR=OUTSIDER).status_code == 403


def test_an_operator_allows_networks_or_a_bearer_token(settings):
    settings.METRICS_ALLOWED_ADDRESSES = ["10.0.0.0/8", "2001:db8::/32"]
    assert scrape("10.1.2.3").status_code == 200
    assert scrape("2001:db8::5").status_code == 200
    assert scrape("127.0.0.1").status_code == 403
    settings.METRICS_ALLOWED_ADDRESSES = []
    settings.METRICS_TOKEN = TOKEN
    assert scrape("10.1.2.3").status_code == 403
    assert scrape(OUTSIDER, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    # Through a proxy too: the token is what counts.
    assert scrape(OUTSIDER, HTTP_AUTHORIZATION=f"Bearer {TOKEN}", HTTP_X_FORWARDED_FOR=OUTSIDER).status_code == 200
    for wrong in (f"Bearer {TOKEN[:-1]}", f"Token {TOKEN}", TOKEN, "Bearer ", ""):
        assert scrape(OUTSIDER, HTTP_AUTHORIZATION=wrong).status_code == 403, wrong


def test_the_settings_are_checked_at_start(monkeypatch):
    monkeypatch.setenv("METRICS_ALLOWED_ADDRESSES", "none")
    assert env_networks("METRICS_ALLOWED_ADDRESSES", ["127.0.0.1"]) == []
    monkeypatch.setenv("METRICS_ALLOWED_ADDRESSES", " 10.0.0.0/8, ::1 ")
    assert env_networks("METRICS_ALLOWED_ADDRESSES", ["127.0.0.1"]) == ["10.0.0.0/8", "::1"]
    monkeypatch.setenv("METRICS_ALLOWED_ADDRESSES", "10.0.0.0/8,prometheus")
    with pytest.raises(ImproperlyConfigured, match="'prometheus' is not an IP address or network"):
        env_networks("METRICS_ALLOWED_ADDRESSES", [])
    monkeypatch.delenv("METRICS_ALLOWED_ADDRESSES")
    env = {**os.environ, "DEBUG": "1", "METRICS_TOKEN": "short"}
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "METRICS_TOKEN must be at least 16 characters long" in result.stderr


@pytest.mark.django_db
@pytest.mark.parametrize("visibility", [Poll.Visibility.AFTER_CLOSE, Poll.Visibility.AFTER_VOTE])
def test_no_metric_gives_an_outsider_a_held_back_poll_s_votes(visibility, in_process_bus):
    """On a quiet server the global vote counters are one poll's votes: only operators see them,
    and no metric is labelled by poll."""
    client = Client(HTTP_HOST="localhost", REMOTE_ADDR=OUTSIDER)
    poll = poll_create(question="Held back?", options=("a", "b"), results_visibility=visibility)
    for _ in range(3):
        assert (
            client.post(f"/polls/{poll.pk}/vote", '{"option": 1}', content_type="application/json").status_code == 204
        )
    stranger = Client(HTTP_HOST="localhost", REMOTE_ADDR="198.51.100.9")
    assert stranger.get(f"/polls/{poll.pk}").json()["total"] is None
    answer = stranger.get("/metrics")
    assert (answer.status_code, answer.json()) == REFUSED
    operator = scrape()
    assert operator.status_code == 200
    labels = {
        name
        for family in text_string_to_metric_families(operator.content.decode())
        for sample in family.samples
        for name in sample.labels
    }
    assert not {name for name in labels if "poll" in name}, labels


@pytest.mark.django_db(transaction=True)
def test_a_real_server_serves_its_metrics_to_loopback_and_the_token_only(process_env, tmp_path):
    server = WebServer(env={**process_env, "METRICS_TOKEN": TOKEN}, log_dir=tmp_path)
    server.start()
    try:
        assert request("GET", f"{server.url}/metrics").status == 200
        proxied = request("GET", f"{server.url}/metrics", headers={"X-Forwarded-For": OUTSIDER})
        assert (proxied.status, proxied.json()) == REFUSED
        assert (
            request(
                "GET",
                f"{server.url}/metrics",
                headers={"X-Forwarded-For": OUTSIDER, "Authorization": f"Bearer {TOKEN}"},
            ).status
            == 200
        )
    finally:
        server.kill()
