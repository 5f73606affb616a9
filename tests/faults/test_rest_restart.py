"""The REST process (gunicorn) stopped with SIGTERM mid-stream and started again, as a
rolling deploy or `docker compose restart rest` does.

gunicorn stops listening at once and lets every request it has read finish (up to its
graceful timeout) before its worker exits: those votes get their 204 and are counted.
What a stop can still cost is a connection the kernel had accepted for the process but
the process had not yet read, reset when the socket closes: sent, never answered, and
settled by the books like any request in flight. Every vote answered 204 is counted
exactly once.
"""

import pytest
from django.conf import settings

from tests.faults.load import (
    ACCEPTED,
    UNKNOWN,
    UNSENT,
    VoteStream,
    settle,
    summarize,
)
from tests.faults.stack import restart_mid_stream, web_and_worker
from testsupport.processes import RestServer

pytestmark = pytest.mark.django_db(transaction=True)

RESTARTS = 2
THREADS = 16


def test_rest_process_stopped_with_sigterm_mid_stream_finishes_its_requests(process_env, tmp_path):
    def stop(rest: RestServer) -> None:
        assert rest.terminate(timeout=30) == 0, rest.log()[-3000:]

    with web_and_worker(process_env, tmp_path, label="Rest", server_class=RestServer) as stack:
        env, polls = stack.env, stack.polls
        with VoteStream(port=stack.web.port, polls=polls, rate=100, threads=THREADS, timeout=20) as stream:
            stream.wait_for(ACCEPTED, 150, timeout=60)
            windows = restart_mid_stream(stack, stream, times=RESTARTS, stop=stop)
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
        assert stack.web.log().count("Worker exiting") >= RESTARTS
        assert stack.worker.alive(), stack.worker.log()[-3000:]
