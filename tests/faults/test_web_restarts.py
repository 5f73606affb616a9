"""The web server stopped mid-stream and started again on its port, as a supervisor does.

SIGKILLed (a crash): a request in flight when the process died has no answer; it may
or may not have been published, and the books say which (each request carries its own
Idempotency-Key). Requests sent while no process listens are refused at connect and
never counted.

SIGTERM (a rolling deploy, `docker compose restart web`), two processes as compose runs
them: uvicorn stops listening at once and lets every request it has read finish (up to
WEB_SHUTDOWN_TIMEOUT) before its processes exit; those votes get their 204. What a stop
can still cost is a connection the kernel had accepted but the process had not read,
reset when the socket closes: sent, never answered, settled by the books.

Either way every vote answered 204, before and after each stop, is counted exactly once.
"""

import random
from collections.abc import Callable

import pytest
from django.conf import settings

from tests.faults.stack import Stack, restart_mid_stream, web_and_worker
from testsupport.ledger import ACCEPTED, UNKNOWN, UNSENT, VoteStream, settle, summarize
from testsupport.processes import WebServer

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 16


def stream_through_restarts(
    stack: Stack, *, times: int, stop: Callable[[WebServer], object], pause: Callable[[], float] = lambda: 0.0
):
    """Votes streamed while the server is stopped and restarted `times` times; the books
    settled and checked exact. Returns (outcomes, the failed ones, the restart windows)."""
    with VoteStream(port=stack.web.port, polls=stack.polls, rate=100, threads=THREADS, timeout=20) as stream:
        stream.wait_for(ACCEPTED, 150, timeout=60)
        windows = restart_mid_stream(stack, stream, times=times, stop=stop, pause=pause)
    outcomes = stream.outcomes()
    report = settle(
        outcomes=outcomes, poll_ids=stack.polls, brokers=settings.KAFKA_BROKERS, topic=stack.env["KAFKA_TOPIC"]
    )
    failed = [o for o in outcomes if o.kind != ACCEPTED]
    print(
        f"\n{report.line()}\nstops {[round(g - s, 2) for s, g, _ in windows]} s, "
        f"downtimes {[round(r - s, 1) for s, _, r in windows]} s; failed {summarize(failed)}"
    )
    report.assert_exact()
    assert stack.worker.alive(), stack.worker.log()[-3000:]
    return outcomes, failed, windows


def test_web_process_sigkilled_mid_stream(process_env, tmp_path):
    crashes, rng = 3, random.Random()
    with web_and_worker(process_env, tmp_path, label="Web") as stack:
        outcomes, failed, windows = stream_through_restarts(
            stack, times=crashes, stop=lambda web: web.kill(), pause=lambda: rng.uniform(0.0, 1.0)
        )

    # Only requests in flight at a crash, or sent while nothing listened, failed.
    in_flight = [o for o in failed if o.kind == UNKNOWN]
    refused_at_connect = [o for o in failed if o.kind == UNSENT]
    assert len(in_flight) + len(refused_at_connect) == len(failed), summarize(failed)
    for o in in_flight:
        assert any(o.started <= dead and o.ended >= killed for killed, dead, _ in windows), o
    for o in refused_at_connect:
        # (Sent a moment before the kill, a connect may still arrive after the process is gone.)
        assert any(killed - 0.5 <= o.started <= ready for killed, _, ready in windows), o
    # A client thread has one request in flight at a time; one more may reach the
    # listening socket in the milliseconds the dying process takes to close it.
    assert len(in_flight) <= 2 * THREADS * crashes
    # Votes before, between and after the crashes were accepted (and are all counted).
    edges = [0.0] + [k for k, _, _ in windows] + [float("inf")]
    for start, end in zip(edges, edges[1:]):
        assert sum(1 for o in outcomes if o.kind == ACCEPTED and start <= o.started < end) >= 100


def test_web_server_stopped_with_sigterm_mid_stream_finishes_its_requests(process_env, tmp_path):
    restarts = 2

    def stop(web: WebServer) -> None:
        assert web.terminate(timeout=30) == 0, web.log()[-3000:]

    with web_and_worker(process_env, tmp_path, label="Restart", workers=2) as stack:
        _, failed, windows = stream_through_restarts(stack, times=restarts, stop=stop)
        log = stack.web.log()

    # Nothing failed but requests around a stop: none got an error answer (a 5xx).
    assert all(o.kind in (UNKNOWN, UNSENT) for o in failed), summarize(failed)
    for o in failed:
        assert any(stopping - 0.5 <= o.started <= ready for stopping, _, ready in windows), o
    # Unanswered ones had reached the socket but not the process: at most one a client
    # thread per stop, where a crash allows two.
    assert sum(1 for o in failed if o.kind == UNKNOWN) <= THREADS * restarts, summarize(failed)
    # The stop was graceful, and quick: both server processes left on their own each time.
    assert all(g - s < 10 for s, g, _ in windows), windows
    assert log.count("Finished server process") >= 2 * restarts
