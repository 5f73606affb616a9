"""Deeply nested JSON is a clear 400 on every endpoint, in process and on a real server."""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.authtoken.models import Token

from polling.strict import JSON_MAX_DEPTH, TOO_DEEP, JSONTooDeep, json_loads, json_too_deep
from polls.tests.factories import make_poll
from tests.http import request
from testsupport.processes import WebServer

DEEP = 10_000
TOO_DEEP_ANSWER = {"detail": TOO_DEEP}


def nested(depth: int, inner: str = "1") -> str:
    """An option (or anything) nested `depth` levels of arrays and objects deep, alternating."""
    opening = "".join("[" if level % 2 else '{"a":' for level in range(depth))
    closing = "".join("]" if level % 2 else "}" for level in reversed(range(depth)))
    return opening + inner + closing


def test_the_depth_is_counted_outside_strings_only():
    assert not json_too_deep(nested(JSON_MAX_DEPTH))
    assert json_too_deep(nested(JSON_MAX_DEPTH + 1))
    assert json_too_deep(nested(DEEP).encode())
    assert not json_too_deep(json.dumps({"question": "[" * 1000, "options": ["{" * 500, '"\\[' * 100]}))
    # An escaped quote does not end a string; an escaped backslash before a quote does.
    assert not json_too_deep('["\\"' + "[" * 100 + '"]')
    assert json_too_deep('["\\\\",' + "[" * 100 + "]" * 101)
    assert json_loads(nested(JSON_MAX_DEPTH)) == json.loads(nested(JSON_MAX_DEPTH))
    with pytest.raises(JSONTooDeep, match=re.escape(TOO_DEEP)):
        json_loads(nested(DEEP))


@pytest.fixture
def staff_headers(db):
    staff = get_user_model().objects.create_user("staff", is_staff=True)
    return {"HTTP_AUTHORIZATION": f"Token {Token.objects.create(user=staff).key}"}


def every_endpoint(poll_id: int) -> list[tuple[str, str]]:
    return [
        ("post", "/polls"),
        ("post", f"/polls/{poll_id}/vote"),
        ("post", f"/polls/{poll_id}/close"),
        ("post", f"/polls/{poll_id}/reopen"),
        ("post", "/voters"),
        ("get", "/polls"),
        ("get", f"/polls/{poll_id}"),
        ("get", "/leaderboard"),
        ("put", f"/polls/{poll_id}"),
        ("patch", "/polls"),
        ("delete", f"/polls/{poll_id}"),
        ("post", "/healthz"),
        ("post", "/does-not-exist"),
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "application/merge-patch+json"]
)
def test_json_ten_thousand_deep_is_a_400_that_says_so_on_every_endpoint(staff_headers, content_type, settings):
    settings.API_MAX_BODY_BYTES = 1 << 20  # room for 10,000 levels (an operator may allow that much)
    client = Client(HTTP_HOST="localhost")
    poll = make_poll()
    bodies = [
        nested(DEEP),
        json.dumps({"question": "q", "option1": "a", "option2": "b"})[:-1] + ', "x": ' + nested(DEEP) + "}",
        '{"option": ' + nested(DEEP) + "}",
    ]
    for method, path in every_endpoint(poll.pk):
        for body in bodies:
            answer = client.generic(method.upper(), path, body, content_type=content_type, **staff_headers)
            assert (answer.status_code, answer.json()) == (400, TOO_DEEP_ANSWER), (method, path)
    assert poll.options.get(position=1).votes == 0
    # Nested as deep as allowed: the usual answers (a refused option, not a refused body).
    vote = client.post(
        f"/polls/{poll.pk}/vote", '{"option": ' + nested(JSON_MAX_DEPTH - 1) + "}", content_type="application/json"
    )
    assert (vote.status_code, vote.json()) == (400, {"option": ["A valid integer is required."]})


@pytest.mark.django_db(transaction=True)
def test_a_real_server_answers_deep_json_with_400_and_logs_no_traceback(process_env, tmp_path):
    web_server = WebServer(env={**process_env, "API_MAX_BODY_BYTES": str(1 << 20)}, log_dir=tmp_path)
    web_server.start()
    poll_id = request("POST", f"{web_server.url}/polls", {"question": "q", "option1": "a", "option2": "b"}).json()["id"]
    for path in ("/polls", f"/polls/{poll_id}/vote", "/voters", f"/polls/{poll_id}/close"):
        for depth in (1_000, DEEP):
            answer = request("POST", f"{web_server.url}{path}", raw=('{"option": ' + nested(depth) + "}").encode())
            assert (answer.status, answer.json()) == (400, TOO_DEEP_ANSWER), (path, depth)
    log = web_server.log()
    assert "Traceback" not in log and "RecursionError" not in log
