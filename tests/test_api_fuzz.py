"""Property-based requests from the OpenAPI schema against a live server (schemathesis).

Well over 1,000 generated requests, valid and invalid, across every operation: none may
answer 5xx, and every answer must match the schema (status codes, content types,
bodies, headers). Two runs:

- valid requests aimed at a poll that exists, so they reach the voting logic instead
  of stopping at 404;
- valid and invalid requests with generated ids, where bad input must be refused.

Every check runs, positive_data_acceptance included: a request the schema allows is
never refused as malformed (400). The rules a schema cannot state, because they depend
on the poll (an option it has, its max_choices) or relate the body to the path
(poll_id), are answered 409; the request bodies' cross-field rules are written into the
schema by polls.api.docs.strict_request_bodies.
"""

import re
import subprocess
import sys

import pytest

from tests.http import request

pytestmark = pytest.mark.django_db(transaction=True)


def schemathesis_run(web_server, tmp_path, *extra: str, config: str = "") -> int:
    """Run schemathesis against the server; fail with its report, return how many requests it made."""
    config_file = tmp_path / "schemathesis.toml"
    config_file.write_text(config)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(config_file),
            "--no-color",
            "run",
            f"{web_server.url}/api/schema",
            "--url",
            web_server.url,
            "--checks",
            "all",
            "--max-examples",
            "100",
            "--seed",
            "20261125",
            "--request-timeout",
            "20",
            "--suppress-health-check",
            "all",
            # One worker: Python 3.11.7's ast.parse is not safe across threads, and
            # hypothesis uses it to describe its filters.
            "--workers",
            "1",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    return sum(int(n) for n in re.findall(r"(\d+) generated", output))


def test_valid_generated_requests_on_a_live_poll_get_no_5xx_and_match_the_schema(web_server, vote_worker, tmp_path):
    poll = request(
        "POST", f"{web_server.url}/polls", {"question": "Fuzzed?", "options": ["a", "b", "c", "d"], "max_choices": 2}
    ).json()
    generated = schemathesis_run(
        web_server,
        tmp_path,
        "--mode",
        "positive",
        "--phases",
        "examples,fuzzing",
        config=f'[parameters]\n"path.poll_id" = {poll["id"]}\n',
    )
    assert generated >= 500


def test_valid_and_invalid_generated_requests_get_no_5xx_and_match_the_schema(web_server, vote_worker, tmp_path):
    generated = schemathesis_run(web_server, tmp_path, "--mode", "all", "--phases", "examples,coverage,fuzzing")
    assert generated >= 500
