"""The vote's lean path (polls.api.vote_intake): the answers of the Django view, from a real
server process for every status, and byte for byte beside Django's handler in process."""

from __future__ import annotations

import asyncio
import http.client
import json
import re

import pytest
from django.conf import settings

from polling.asgi import application, django_asgi_app
from polls.api.vote_intake import VoteIntake
from polls.domain.exceptions import IdempotencyKeyReused
from polls.domain.services import poll_create
from polls.domain.voters import voter_token_issue
from polls.models import Poll
from polls.tests.factories import counts
from tests.http import request
from testsupport.processes import WebServer, wait_until

JSON = [("content-type", "application/json")]


def _scope(path: str, headers: list[tuple[str, str]], body: bytes) -> dict:
    raw = [(b"host", b"localhost"), *((k.encode(), v.encode()) for k, v in headers)]
    if not any(k in ("content-length", "transfer-encoding") for k, _ in headers):
        raw.append((b"content-length", str(len(body)).encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": raw,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def serve(app, path: str, body: bytes = b"", headers: list[tuple[str, str]] = JSON) -> tuple[int, bytes, dict]:
    """Status, body and headers (the voter token's value left out) of one request to an ASGI app."""

    async def call():
        sent = []
        received = [{"type": "http.request", "body": body, "more_body": False}]
        answered = asyncio.Event()

        async def receive():
            if received:
                return received.pop()
            await answered.wait()  # the client goes away once answered
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                answered.set()

        await app(_scope(path, headers, body), receive, send)
        return sent

    sent = asyncio.run(call())
    answer: dict[str, list[str]] = {}
    for name, value in sent[0]["headers"]:
        value = value.decode()
        if name.lower() == b"set-cookie":
            # The token is new each time; the expiry a year from now, to the second.
            value = re.sub(r"expires=[^;]+", "expires=<a year on>", "voter=<token>;" + value.split(";", 1)[1])
        answer.setdefault(name.decode().lower(), []).append(value)
    answer.pop("content-length", None)  # the lean path always sends one; not every Django answer does
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]), {k: sorted(v) for k, v in answer.items()}


def _not_django(scope, receive, send):
    raise AssertionError(f"the lean path handed {scope['path']} to Django")


@pytest.mark.django_db(transaction=True)
def test_the_lean_path_answers_as_the_django_view_byte_for_byte(in_process_bus):
    lean = VoteIntake(_not_django)
    poll = poll_create(question="Colour?", options=["Red", "Blue", "Green"])
    closed = poll_create(question="Closed?", options=["a", "b"])
    Poll.objects.filter(pk=closed.pk).update(status=Poll.Status.CLOSED)
    signed_in_only = poll_create(question="Members?", options=["a", "b"], one_vote_per="user")
    _, token = voter_token_issue()
    vote = f"/polls/{poll.pk}/vote"
    cases = [
        (vote, b'{"option": 1}', JSON),
        (vote, b'{"poll_id": %d, "option": 2}' % poll.pk, JSON + [("x-voter-token", token)]),
        (vote, b'{"options": [1], "vote_id": "5f0e1c52-4b0e-4f5e-9d36-2a4f3f0c7a11"}', JSON),
        (vote, b'{"option": 9}', JSON),
        (vote, b'{"options": [1, 1]}', JSON),
        (vote, b'{"option": "1", "options": {}, "vote_id": "x"}', JSON),
        (vote, b'{"poll_id": 1000000, "option": 1}', JSON),
        (vote, b"[1]", JSON),
        (vote, b'{"option": 1', JSON),
        (vote, b'{"option": NaN}', JSON),
        (vote, b'{"option": 1, "deep": ' + b"[" * 40 + b"]" * 40 + b"}", JSON),
        (vote, b"", [("content-type", "text/plain")]),
        (vote, b"option=1", [("content-type", "application/x-www-form-urlencoded")]),
        (vote, b'{"option": 1}', JSON + [("x-voter-token", "made-up:token")]),
        (vote, b'{"option": 1}', JSON + [("cookie", f"voter={token}")]),
        (vote, b'{"option": 1}', JSON + [("cookie", "voter=made-up:token")]),
        (vote, b'{"option": 1}', JSON + [("idempotency-key", "k" * 201)]),
        (vote, b"x" * (settings.API_MAX_BODY_BYTES + 1), JSON),
        (vote, b'{"option": 1}', JSON + [("transfer-encoding", "chunked")]),
        (vote, b'{"option": 1}', JSON + [("content-length", "many")]),
        ("/polls/999999/vote", b'{"option": 1}', JSON),
        (f"/polls/{closed.pk}/vote", b'{"option": 1}', JSON),
        (f"/polls/{signed_in_only.pk}/vote", b'{"option": 1}', JSON),
    ]
    for path, body, headers in cases:
        expected = serve(django_asgi_app, path, body, headers)
        assert serve(lean, path, body, headers) == expected, (path, body, headers)
    assert counts(poll) == [7, 2, 0]  # the ballot with a vote_id counted once


@pytest.mark.django_db(transaction=True)
def test_requests_the_full_stack_must_answer_go_to_django(in_process_bus):
    seen = []

    async def django(scope, receive, send):
        seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    lean = VoteIntake(django)
    poll = poll_create(question="Colour?", options=["Red", "Blue"])
    vote = f"/polls/{poll.pk}/vote"
    for path, headers in [
        (vote, JSON + [("authorization", "Token abc")]),
        (vote, JSON + [("cookie", f"{settings.SESSION_COOKIE_NAME}=abc")]),
        (vote, JSON + [("host", "elsewhere.example")]),
        (vote, JSON + [("accept", "text/html")]),
        (vote, JSON + [("accept", "application/json; indent=4")]),
        (f"{vote}/", JSON),
        ("/polls/1234567890123456789/vote", JSON),
    ]:
        assert serve(lean, path, b'{"option": 1}', headers)[0] == 299, (path, headers)
    assert serve(lean, vote, b'{"option": 1}', JSON + [("accept", "application/json, text/html")])[0] == 204
    assert len(seen) == 7


def test_the_asgi_application_routes_http_through_the_lean_path():
    assert isinstance(application.application_mapping["http"], VoteIntake)


# --- a real server process ------------------------------------------------------------------


def _raw_post(server: WebServer, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict, bytes]:
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.putrequest("POST", path)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        if body:
            connection.send(body)
        answer = connection.getresponse()
        return answer.status, answer.msg, answer.read()  # header names in any case
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_a_real_server_answers_every_status_of_the_vote(web_server, vote_worker):
    poll = poll_create(question="Colour?", options=["Red", "Blue"])
    closed = poll_create(question="Closed?", options=["a", "b"])
    Poll.objects.filter(pk=closed.pk).update(status=Poll.Status.CLOSED)
    members = poll_create(question="Members?", options=["a", "b"], one_vote_per="user")
    once = poll_create(question="Once?", options=["a", "b"], one_vote_per="voter")
    url = f"{web_server.url}/polls/{poll.pk}/vote"

    first = request("POST", url, {"option": 1})
    assert (first.status, first.body) == (204, b"")
    assert first.headers["Set-Cookie"].startswith("voter=") and "HttpOnly" in first.headers["Set-Cookie"]
    assert first.headers["X-Content-Type-Options"] == "nosniff" and first.headers["X-Frame-Options"] == "DENY"
    token = request("POST", f"{web_server.url}/voters").json()["voter_token"]
    returning = request("POST", url, {"option": 2}, headers={"X-Voter-Token": token})
    assert returning.status == 204 and "Set-Cookie" not in returning.headers
    cookie = first.headers["Set-Cookie"].split(";")[0]
    assert "Set-Cookie" not in request("POST", url, {"option": 1}, headers={"Cookie": cookie}).headers
    keyed = {"Idempotency-Key": "once", "X-Voter-Token": token}
    assert request("POST", url, {"option": 2}, headers=keyed).status == 204
    assert request("POST", url, {"option": 2}, headers=keyed).status == 204  # the same ballot again
    reused = request("POST", url, {"option": 1}, headers=keyed)
    assert (reused.status, reused.json()["detail"]) == (409, str(IdempotencyKeyReused()))

    assert request("POST", url, {"option": 3}).json() == {
        "option": ["Option 3 does not exist: this poll has options 1 to 2."]
    }
    assert request("POST", f"{web_server.url}/polls/{members.pk}/vote", {"option": 1}).status == 401
    assert request("POST", f"{web_server.url}/polls/999999/vote", {"option": 1}).status == 404
    assert request("POST", f"{web_server.url}/polls/{closed.pk}/vote", {"option": 1}).status == 409
    once_url = f"{web_server.url}/polls/{once.pk}/vote"
    assert request("POST", once_url, {"option": 1}, headers={"X-Voter-Token": token}).status == 204
    wait_until(lambda: counts(once) == [1, 0], timeout=30, what="the first ballot counted")
    again = request("POST", once_url, {"option": 2}, headers={"X-Voter-Token": token})
    assert (again.status, again.json()) == (
        409,
        {"detail": f"You have already voted in poll {once.pk}: it takes one vote per voter."},
    )

    path = f"/polls/{poll.pk}/vote"
    chunked = b'0d\r\n{"option": 1}\r\n0\r\n\r\n'
    status, headers, body = _raw_post(
        web_server, path, chunked, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    )
    assert status == 411, body
    limit = settings.API_MAX_BODY_BYTES
    status, headers, body = _raw_post(
        web_server, path, b" " * (limit + 1), {"Content-Type": "application/json", "Content-Length": str(limit + 1)}
    )
    assert (status, json.loads(body)) == (
        413,
        {"detail": f"Request body too large: {limit + 1} bytes, at most {limit} accepted."},
    )
    status, headers, body = _raw_post(
        web_server, path, b"option=1", {"Content-Type": "text/plain", "Content-Length": "8"}
    )
    assert status == 415 and headers["Content-Type"] == "application/json"

    wait_until(lambda: counts(poll) == [2, 2], timeout=30, what="the four ballots counted once each")


@pytest.mark.django_db(transaction=True)
def test_a_real_server_answers_429_over_the_rate_limit_and_503_without_the_broker(process_env, tmp_path):
    poll = poll_create(question="Colour?", options=["Red", "Blue"])
    limited = WebServer(env={**process_env, "RATE_LIMIT_VOTES_PER_ADDRESS": "2/min"}, log_dir=tmp_path)
    # A broker that is not there: no acknowledgement within the budget.
    unavailable = WebServer(
        env={**process_env, "KAFKA_BROKERS": "127.0.0.1:9", "VOTE_PUBLISH_TIMEOUT": "0.5"}, log_dir=tmp_path
    )
    for server in (limited, unavailable):
        server.start()
    try:
        statuses = [request("POST", f"{limited.url}/polls/{poll.pk}/vote", {"option": 1}).status for _ in range(3)]
        refused = request("POST", f"{limited.url}/polls/{poll.pk}/vote", {"option": 1})
        assert statuses == [204, 204, 429]
        assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["detail"].startswith("Request was throttled. Expected available in")

        answer = request("POST", f"{unavailable.url}/polls/{poll.pk}/vote", {"option": 1})
        assert (answer.status, answer.headers["Retry-After"]) == (503, "2")
        assert answer.json() == {"detail": "The vote was not recorded: the vote log is unavailable. Retry later."}
    finally:
        limited.kill()
        unavailable.kill()
