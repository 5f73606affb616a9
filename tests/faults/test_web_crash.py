"""The web process SIGKILLed mid-stream and restarted: only the requests in flight fail.

A request in flight when the process died has no answer: it may or may not have been
published, and the books say which (each request carries its own Idempotency-Key).
Requests sent while no process listens are refused at connect and never counted.
Every vote answered 204, before and after each crash, is counted exactly once.
"""

import random

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

pytestmark = pytest.mark.django_db(transaction=True)

CRASHES = 3
THREADS = 16


def test_web_process_sigkilled_mid_stream(process_env, tmp_path):
    rng = random.Random()
    with web_and_worker(process_env, tmp_path, label="Web") as stack:
        env, polls = stack.env, stack.polls
        with VoteStream(port=stack.web.port, polls=polls, rate=100, threads=THREADS, timeout=20) as stream:
            stream.wait_for(ACCEPTED, 150, timeout=60)
            windows = restart_mid_stream(stack, stream, times=CRASHES, stop=lambda web: web.kill(),
                                         pause=lambda: rng.uniform(0.0, 1.0))
        outcomes = stream.outcomes()

        report = settle(outcomes=outcomes, poll_ids=polls, brokers=settings.KAFKA_BROKERS,
                        topic=env["KAFKA_TOPIC"])
        failed = [o for o in outcomes if o.kind != ACCEPTED]
        print(f"\n{report.line()}\ndowntimes {[round(r - k, 1) for k, _, r in windows]} s; "
              f"failed {summarize(failed)}")
        report.assert_exact()

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
        assert len(in_flight) <= 2 * THREADS * CRASHES
        # Votes before, between and after the crashes were accepted (and are all counted).
        edges = [0.0] + [k for k, _, _ in windows] + [float("inf")]
        for start, end in zip(edges, edges[1:]):
            assert sum(1 for o in outcomes if o.kind == ACCEPTED and start <= o.started < end) >= 100
        assert stack.worker.alive(), stack.worker.log()[-3000:]
