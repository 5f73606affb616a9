"""Fixtures shared by the whole suite: real services, topics, server and worker processes."""

from __future__ import annotations

import os
import threading
import uuid

import pytest
from django.conf import settings as django_settings
from django.db import connection

from polls.kafka.bus import reset_vote_bus
from polls.kafka.topics import ensure_topics
from testsupport.browser import chromium
from testsupport.cluster import session_cluster, stop_session_cluster
from testsupport.kafka import make_vote_worker
from testsupport.plugin import service_stack
from testsupport.processes import WebServer, WorkerProcess, kill_leftovers


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test():
    """After the test's own teardown: kill a web or worker process a failure left running."""
    yield
    kill_leftovers()


@pytest.fixture(scope="session")
def services():
    """The PostgreSQL, Redis and Kafka processes of this test run."""
    return service_stack()


@pytest.fixture(scope="session")
def kafka_cluster():
    """A three-broker Kafka cluster beside the single broker, shared by the tests that use it."""
    yield session_cluster()
    stop_session_cluster()


@pytest.fixture
def cluster_env(process_env, kafka_cluster, settings):
    """process_env with the vote topics on the cluster, whose three brokers it names."""
    settings.KAFKA_BROKERS = kafka_cluster.bootstrap_servers
    reset_vote_bus()
    ensure_topics()
    yield {**process_env, "KAFKA_BROKERS": kafka_cluster.bootstrap}
    reset_vote_bus()


@pytest.fixture
def kafka_topic(settings):
    """A fresh vote topic (and dead-letter topic) for one test, so tests never share votes."""
    name = f"polls-test-{uuid.uuid4().hex[:12]}"
    settings.KAFKA_TOPIC = name
    settings.KAFKA_CONSUMER_GROUP = f"workers-{name}"
    reset_vote_bus()
    ensure_topics()
    yield name
    reset_vote_bus()


@pytest.fixture
def in_process_bus(settings):
    """Votes applied in process, as in the embedded default: a 204 means already counted."""
    settings.KAFKA_BROKERS = []
    reset_vote_bus()
    yield
    reset_vote_bus()


@pytest.fixture
def process_env(kafka_topic, transactional_db):
    """The environment of a web or worker process that shares this test's database and topic."""
    db = connection.settings_dict
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"postgresql://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        KAFKA_TOPIC=kafka_topic,
        KAFKA_CONSUMER_GROUP=django_settings.KAFKA_CONSUMER_GROUP,
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def web_server(process_env, tmp_path):
    server = WebServer(env=process_env, log_dir=tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def vote_worker(process_env, tmp_path):
    worker = WorkerProcess(env=process_env, log_dir=tmp_path, group=process_env["KAFKA_CONSUMER_GROUP"])
    worker.start()
    worker.wait_assigned(process_env["KAFKA_TOPIC"])
    yield worker
    worker.kill()


@pytest.fixture
def worker_thread(kafka_topic, transactional_db):
    """The vote worker running in a thread of the test process, applying to the test database."""
    worker = make_vote_worker(group=django_settings.KAFKA_CONSUMER_GROUP)

    def run() -> None:
        try:
            worker.run()
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=run, name="vote-worker", daemon=True)
    thread.start()
    yield worker
    worker.stop()
    thread.join(30)
    worker.consumer.close(autocommit=False)
    worker.dead_letter_producer.close(timeout=5)


# Reports every Content-Security-Policy violation of a page to the test (see `page`).
_REPORT_CSP_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  const source = `${event.sourceFile}:${event.lineNumber}`;
  window.reportCspViolation(`${event.effectiveDirective} blocked ${event.blockedURI || "inline"} in ${source}`);
});
"""


@pytest.fixture
def page():
    """A page of Debian's headless Chromium driven by Playwright (never a downloaded browser).

    Every page it opens must keep to the site's Content-Security-Policy: a violation
    (a `securitypolicyviolation` event, or Chromium's console message for one) fails
    the test at teardown, so each browser test checks the policy of the pages it visits.

    One browser per test, not per module: Playwright's sync API keeps an event loop
    running on this thread while it is open, and Django then refuses the database
    teardown of transactional tests as "async". Requested after the server fixtures, it
    is closed before their teardown.
    """
    violations: list[str] = []
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1100, "height": 800})
        context.expose_function("reportCspViolation", lambda text: violations.append(text))
        context.add_init_script(_REPORT_CSP_VIOLATIONS)
        opened = context.new_page()
        opened.on(
            "console",
            lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None,
        )
        yield opened
        context.close()
    assert not violations, f"the pages broke the Content-Security-Policy: {violations}"
