"""The REST process (gunicorn) stopped with SIGTERM mid-stream and started again, as a
rolling deploy or `docker compose restart rest` does.

gunicorn stops listening at once and lets every request it has read finish (up to its
graceful timeout) before its worker exits: those votes get their 204 and are counted.
What a stop can still cost is a connection the kernel had accepted for the process but
the process had not yet read, reset when the socket closes: sent, never answered, and
settled by the books like any request in flight. Every vote answered 204 is counted
exactly once.
"""

import time

import pytest
from django.conf import settings

from tests.faults.load import (
    ACCEPTED,
    UNKNOWN,
    UNSENT,
    VoteStream,
    create_poll,
    production_env,
    settle,
    summarize,
)
from testsupport.processes import RestServer, WorkerProcess

pytestmark = pytest.mark.django_db(transaction=True)

RESTARTS = 2
THREADS = 16


def test_rest_process_stopped_with_sigterm_mid_stream_finishes_its_requests(process_env, tmp_path):
    env = production_env(process_env)
    rest = RestServer(env=env, log_dir=tmp_path)
    worker = WorkerProcess(env=env, log_dir=tmp_path, group=env["KAFKA_CONSUMER_GROUP"])
    windows: list[tuple[float, float, float]] = []  # (SIGTERM sent, process gone, new one ready)
    try:
        rest.start()
        worker.start()
        port = rest.port
        polls = {create_poll(rest.url, question=f"Rest poll {n}"): 4 for n in range(3)}
        with VoteStream(port=port, polls=polls, rate=100, threads=THREADS, timeout=20) as stream:
            stream.wait_for(ACCEPTED, 150, timeout=60)
            for _ in range(RESTARTS):
                stopping = time.monotonic()
                assert rest.terminate(timeout=30) == 0, rest.log()[-3000:]
                gone = time.monotonic()
                rest = RestServer(env=env, log_dir=tmp_path, port=port)
                rest.start()
                ready = time.monotonic()
                windows.append((stopping, gone, ready))
                stream.wait_for(ACCEPTED, 150, since=ready, timeout=60)
        outcomes = stream.outcomes()

        report = settle(outcomes=outcomes, poll_ids=polls, brokers=settings.KAFKA_BROKERS,
                        topic=env["KAFKA_TOPIC"])
        failed = [o for o in outcomes if o.kind != ACCEPTED]
        print(f"\n{report.line()}\nstops {[round(g - s, 2) for s, g, _ in windows]} s, "
              f"downtimes {[round(r - s, 1) for s, _, r in windows]} s; failed {summarize(failed)}")
        report.assert_exact()

        # Nothing failed but requests around a stop: none got an error answer (a 5xx).
        assert all(o.kind in (UNKNOWN, UNSENT) for o in failed), summarize(failed)
        for o in failed:
            assert any(stopping - 0.5 <= o.started <= ready for stopping, _, ready in windows), o
        # Unanswered ones had reached the socket but not the process: at most one a client
        # thread per stop, where a crash (tests/faults/test_web_crash.py) allows two.
        assert sum(1 for o in failed if o.kind == UNKNOWN) <= THREADS * RESTARTS, summarize(failed)
        # The stop was graceful, and quick: gunicorn's worker left on its own.
        assert all(g - s < 10 for s, g, _ in windows), windows
        assert rest.log().count("Worker exiting") >= RESTARTS
        assert worker.alive(), worker.log()[-3000:]
    finally:
        rest.kill()
        worker.kill()
