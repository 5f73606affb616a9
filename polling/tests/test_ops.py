"""Operations: /healthz, /readyz, /metrics, JSON logs and the commands' --help.

Everything runs against the real PostgreSQL, Redis and Kafka of the test run; the
worker and web tests start real server (polling.serve) and `consume_votes` processes.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.management import get_commands, load_command_class
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from devservices import free_port
from polling import health
from polling.logging import JsonFormatter
from polls.api.apis import PollVoteApi
from polls.api.metrics import VoteIntakeMetricsMixin
from polls.kafka import health as kafka_health
from polls.kafka.topics import ensure_topics, vote_topic
from tests.http import request
from tests.test_deploy_files import compose_web_server, image_web_server
from testsupport.processes import REPO, WebServer, WorkerProcess, wait_until

SEED_POLL = {
    "question": "What is your favorite color?",
    "option1": "Red",
    "option2": "Blue",
    "option3": "Green",
    "option4": "Yellow",
}


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a Prometheus text exposition, keyed by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scraped: dict, name: str, **labels) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


def scrape(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return samples(response.read().decode())


@pytest.fixture(autouse=True, scope="module")
def _close_probe_clients():
    """The readiness probe keeps a Kafka admin client; close it before the broker stops."""
    yield
    kafka_health._kafka_probe.reset()


def wait_readiness_settled() -> None:
    """Let a probe left running by an earlier test finish, so the next one starts fresh."""
    wait_until(lambda: all(f.done() for f in list(health._inflight.values())), timeout=15, what="probes to finish")


# --- /healthz and /readyz ------------------------------------------------------------------


def test_healthz_answers_ok_without_touching_any_service(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


# The functional tests give each check more time than the default second: this machine
# may be loaded, and what they show is which services are up, not how fast. The bound
# itself is tested with the default, against a Kafka that cannot answer.


@pytest.mark.django_db
def test_readyz_checks_database_kafka_and_redis_when_configured(client, settings, kafka_topic):
    settings.READYZ_TIMEOUT = 10
    wait_readiness_settled()
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "kafka", "redis"}
    for result in body["checks"].values():
        assert result["ok"] is True
        assert 0 <= result["ms"] < 10_000


@pytest.mark.django_db
def test_readyz_answers_503_naming_redis_while_redis_is_stopped(client, services, settings, kafka_topic):
    settings.READYZ_TIMEOUT = 10
    wait_readiness_settled()
    assert client.get("/readyz").status_code == 200
    services.redis.stop()
    try:
        response = client.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "unavailable"
        assert body["down"] == ["redis"]
        assert body["checks"]["redis"]["ok"] is False
        assert body["checks"]["redis"]["error"]
        assert body["checks"]["database"]["ok"] is True
        assert body["checks"]["kafka"]["ok"] is True
    finally:
        services.redis.start()
    # The kept connection pool reconnects by itself.
    wait_until(
        lambda: client.get("/readyz").status_code == 200,
        timeout=15,
        interval=0.2,
        what="/readyz to recover with Redis back",
    )


@pytest.mark.django_db
def test_readyz_answers_503_naming_kafka_until_the_vote_topic_exists(client, settings, caplog):
    """Only the worker creates the topic: a web process ready before any worker had run
    took votes that each waited VOTE_PUBLISH_TIMEOUT for it and were answered 503."""
    settings.READYZ_TIMEOUT = 10
    wait_readiness_settled()
    settings.KAFKA_TOPIC = f"polls-not-yet-{uuid.uuid4().hex[:8]}"
    with caplog.at_level(logging.WARNING, logger="polling.health"):
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["down"] == ["kafka"]
    assert body["checks"]["kafka"] == {"ok": False, "error": "VoteTopicMissing"}
    assert f"the vote topic '{settings.KAFKA_TOPIC}' does not exist yet" in caplog.text
    ensure_topics()  # what the worker does when it starts
    wait_readiness_settled()
    assert client.get("/readyz").status_code == 200


@pytest.mark.django_db
def test_readyz_is_bounded_and_leaks_nothing_when_kafka_is_unreachable(client, settings):
    settings.READYZ_TIMEOUT = 1.0  # the default
    wait_readiness_settled()

    def other_threads():
        # The probes' own pool (thread names "readyz_N") may still grow up to its size.
        return sum(1 for thread in threading.enumerate() if not thread.name.startswith("readyz"))

    client.get("/readyz")
    threads_before = other_threads()
    settings.KAFKA_BROKERS = [f"127.0.0.1:{free_port()}"]  # nothing listens there
    try:
        for _ in range(3):
            started = time.monotonic()
            response = client.get("/readyz")
            took = time.monotonic() - started
            assert response.status_code == 503
            assert response.json()["down"] == ["kafka"]
            # About the timeout, whatever the client would wait by itself (slack for a loaded machine).
            assert took < 3, f"a probe with Kafka unreachable took {took:.1f} s"
            wait_readiness_settled()
        # A failed bootstrap must not leave the admin client's IO thread behind.
        assert other_threads() <= threads_before
    finally:
        wait_readiness_settled()


@pytest.mark.django_db
def test_readyz_in_the_embedded_mode_checks_only_the_database(client, settings):
    settings.READYZ_TIMEOUT = 10
    wait_readiness_settled()
    settings.KAFKA_BROKERS = []
    settings.REDIS_URL = None
    response = client.get("/readyz")
    assert response.status_code == 200
    assert list(response.json()["checks"]) == ["database"]


@pytest.mark.django_db
def test_probes_and_metrics_answer_whatever_the_host_header(client, settings, kafka_topic):
    """Orchestrators probe by IP address, which ALLOWED_HOSTS does not list."""
    settings.READYZ_TIMEOUT = 10
    wait_readiness_settled()
    assert client.get("/leaderboard", HTTP_HOST="10.1.2.3:8000").status_code == 400
    assert client.get("/healthz", HTTP_HOST="10.1.2.3:8000").status_code == 200
    assert client.get("/readyz", HTTP_HOST="10.1.2.3:8000").status_code == 200
    assert client.get("/metrics", HTTP_HOST="10.1.2.3:9000").status_code == 200


# --- /metrics ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_metrics_count_requests_by_view_and_status(client):
    before = samples(client.get("/metrics").content.decode())
    client.get("/healthz")
    client.get("/healthz")
    client.get("/polls/999999999")
    client.get("/no/such/path")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    after = samples(response.content.decode())

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("polling_http_requests_total", view="healthz", method="GET", status="200") == 2
    assert delta("polling_http_requests_total", view="poll-detail", method="GET", status="404") == 1
    assert delta("polling_http_requests_total", view="<unmatched>", method="GET", status="404") == 1
    assert delta("polling_http_request_duration_seconds_count", view="healthz", method="GET", status="200") == 2
    # The process collector comes along; the worker's metrics do not.
    assert value(after, "process_cpu_seconds_total") > 0
    assert not any(name.startswith("polling_worker_") for name, _ in after)


def test_metrics_speak_openmetrics_when_asked(client):
    response = client.get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.decode().rstrip().endswith("# EOF")


def test_the_vote_view_counts_its_intake():
    """polls.api.apis.PollVoteApi must carry the mixin that counts accepted, rejected and 503 votes."""
    assert issubclass(PollVoteApi, VoteIntakeMetricsMixin), (
        "add polls.api.metrics.VoteIntakeMetricsMixin as the first base of polls.api.apis.PollVoteApi"
    )


def test_votes_publish_latency_and_intake_and_worker_metrics_from_real_processes(process_env, tmp_path):
    metrics_port = free_port()
    web = WebServer(env=process_env, log_dir=tmp_path)
    worker = WorkerProcess(
        env=process_env,
        log_dir=tmp_path,
        group=process_env["KAFKA_CONSUMER_GROUP"],
        extra=["--metrics-port", str(metrics_port), "--metrics-addr", "127.0.0.1", "--progress-interval", "1"],
    )
    web.start()
    worker.start()
    try:
        poll_id = request("POST", f"{web.url}/polls", SEED_POLL).json()["id"]
        vote_url = f"{web.url}/polls/{poll_id}/vote"
        with ThreadPoolExecutor(max_workers=16) as pool:
            statuses = list(pool.map(lambda n: request("POST", vote_url, {"option": 1 + n % 4}).status, range(40)))
        assert statuses == [204] * 40
        assert request("POST", vote_url, {"option": 9}).status == 409  # well-formed, not an option of this poll
        assert request("POST", f"{web.url}/polls/999999999/vote", {"option": 1}).status == 404

        # A malformed message in the topic is dead-lettered and counted as such.
        producer = KafkaProducer(bootstrap_servers=process_env["KAFKA_BROKERS"])
        producer.send(vote_topic(), key=str(poll_id).encode(), value=b"not a vote").get(timeout=10)
        producer.close()

        worker_metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        wait_until(
            lambda: (
                value(scrape(worker_metrics), "polling_worker_votes_applied_total") == 40
                and value(scrape(worker_metrics), "polling_worker_votes_dead_lettered_total") == 1
            ),
            timeout=60,
            interval=0.3,
            what="the worker to apply 40 votes and dead-letter 1",
        )

        # Lag is reported per partition and drops to 0 once everything is consumed.
        def lag_settled():
            lags = {
                dict(labels)["partition"]: v
                for (name, labels), v in scrape(worker_metrics).items()
                if name == "polling_worker_consumer_lag"
            }
            return lags and all(v == 0 for v in lags.values()) and lags

        wait_until(lag_settled, timeout=30, interval=0.3, what="per-partition lag at 0")
        scraped = scrape(worker_metrics)
        assert value(scraped, "polling_worker_batch_size_sum") == 41
        assert value(scraped, "polling_worker_batch_size_count") >= 1
        assert value(scraped, "polling_worker_batch_duration_seconds_count") == value(
            scraped, "polling_worker_batch_size_count"
        )
        assert value(scraped, "polling_worker_votes_duplicates_total") == 0
        lags = [labels for name, labels in scraped if name == "polling_worker_consumer_lag"]
        assert {dict(labels)["topic"] for labels in lags} == {process_env["KAFKA_TOPIC"]}

        web_scraped = scrape(f"{web.url}/metrics")
        assert value(web_scraped, "polling_vote_publish_duration_seconds_count", outcome="ok") == 40
        assert value(web_scraped, "polling_http_requests_total", view="poll-vote", method="POST", status="204") == 40
        assert value(web_scraped, "polling_http_requests_total", view="poll-vote", method="POST", status="409") == 1
        if issubclass(PollVoteApi, VoteIntakeMetricsMixin):
            assert value(web_scraped, "polling_votes_accepted_total") == 40
            assert value(web_scraped, "polling_votes_rejected_total", reason="option_out_of_range") == 1
            assert value(web_scraped, "polling_votes_rejected_total", reason="poll_not_found") == 1

        # The worker reports progress every --progress-interval seconds as JSON lines.
        def progress_lines():
            return [entry for entry in map(json.loads, worker.log().splitlines()) if "progress" in entry]

        def reported(field):
            return sum(entry["progress"][field] for entry in progress_lines())

        wait_until(
            lambda: reported("votes_applied") == 40 and reported("dead_lettered") == 1,
            timeout=15,
            interval=0.3,
            what="progress lines reporting all 40 votes and the dead letter",
        )
    finally:
        web.kill()
        worker.kill()

    progress = progress_lines()
    assert progress[-1]["progress"]["votes_applied_total"] == 40
    assert all(entry["message"].startswith("progress: ") for entry in progress)
    assert set(progress[-1]["progress"]) >= {"batches", "votes_applied", "lag", "lag_by_partition", "interval_s"}


# --- Logs ------------------------------------------------------------------------------------


def test_production_logs_are_one_json_object_per_line(process_env, tmp_path):
    """The image's web command, compose's (two processes) and the worker's with DEBUG off:
    every line they write is JSON."""
    web = image_web_server(process_env, tmp_path)
    compose_web = compose_web_server(process_env, tmp_path)
    worker = WorkerProcess(env=process_env, log_dir=tmp_path, group=process_env["KAFKA_CONSUMER_GROUP"])
    web.start()
    compose_web.start()
    worker.start()
    try:
        for server in (web, compose_web):
            request("GET", f"{server.url}/polls/999999999")  # a 404: Django logs a warning for it
    finally:
        web.terminate()
        compose_web.terminate()
        worker.terminate()
    for process in (web, compose_web, worker):
        lines = process.log().splitlines()
        assert lines, f"{process.name} logged nothing"
        for line in lines:
            entry = json.loads(line)
            assert {"time", "level", "logger", "message"} <= set(entry), line
    worker_messages = [json.loads(line)["message"] for line in worker.log().splitlines()]
    assert any(message.startswith("consuming ") for message in worker_messages)
    assert "vote worker stopped" in worker_messages
    for server in (web, compose_web):
        entries = [json.loads(line) for line in server.log().splitlines()]
        # uvicorn's own lines (its start, its stop on SIGTERM) go through the same formatter.
        uvicorn_messages = [e["message"] for e in entries if e["logger"] == "uvicorn.error"]
        assert any(m.startswith("Started server process") for m in uvicorn_messages), uvicorn_messages
        assert any(m.startswith("Finished server process") for m in uvicorn_messages), uvicorn_messages
        assert any(e["logger"] == "django.request" and e["status_code"] == 404 for e in entries)
        # The access log, in place of the server's plain-text one; no client address in it.
        (access,) = [e for e in entries if e["logger"] == "polling.access" and e["http"]["path"] == "/polls/999999999"]
        assert access["http"] == {
            "method": "GET",
            "path": "/polls/999999999",
            "status": 404,
            "view": "poll-detail",
            "duration_ms": access["http"]["duration_ms"],
        }
        assert "127.0.0.1" not in json.dumps(access)


def test_plain_logs_in_debug_mode_or_when_asked(tmp_path):
    env = {"LOG_FORMAT": "plain"}
    script = "import logging, django; django.setup(); logging.getLogger('x').warning('hello %s', 'there')"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**_django_env(), **env},
        check=True,
    )
    assert result.stderr.strip().endswith("WARNING x hello there")
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**_django_env(), "DEBUG": "1"},
        check=True,
    )
    assert result.stderr.strip().endswith("WARNING x hello there")
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, env=_django_env(), check=True
    )
    assert json.loads(result.stderr)["message"] == "hello there"


def _django_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != "LOG_FORMAT"} | {
        "DJANGO_SETTINGS_MODULE": "polling.settings"
    }


def test_json_formatter_keeps_extras_and_tracebacks_on_one_line():
    logger = logging.getLogger("polling.tests.json")
    record = None
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        record = logger.makeRecord(
            logger.name,
            logging.ERROR,
            __file__,
            1,
            "failed for %s",
            ("poll 7",),
            sys.exc_info(),
            extra={"poll_id": 7, "detail": {"a": [1, 2]}, "obj": object()},
        )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "failed for poll 7"
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "polling.tests.json"
    assert entry["time"].endswith("Z")
    assert entry["poll_id"] == 7
    assert entry["detail"] == {"a": [1, 2]}
    assert entry["obj"].startswith("<object object")
    assert "ValueError: bad" in entry["exc_info"]


# --- Commands ---------------------------------------------------------------------------------


def test_every_project_command_documents_itself_and_its_options():
    project_apps = {"polls", "leaderboard", "realtime", "polling"}
    commands = {name: app for name, app in get_commands().items() if app in project_apps}
    assert "consume_votes" in commands and "verify_counts" in commands
    for name, app in commands.items():
        command = load_command_class(app, name)
        assert command.help.strip(), f"{name} has no help text"
        parser = command.create_parser("manage.py", name)
        own = [action for action in parser._actions if action.dest not in _DJANGO_OPTIONS]
        for action in own:
            assert action.help, f"{name} {'/'.join(action.option_strings) or action.dest} has no help"


_DJANGO_OPTIONS = {
    "help",
    "version",
    "verbosity",
    "settings",
    "pythonpath",
    "traceback",
    "no_color",
    "force_color",
    "skip_checks",
}


def test_consume_votes_help_runs_and_names_its_options():
    result = subprocess.run(
        [sys.executable, "manage.py", "consume_votes", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for option in ("--batch-size", "--batch-wait-ms", "--group", "--metrics-port", "--progress-interval"):
        assert option in result.stdout
