"""The Kafka broker SIGKILLed and restarted while votes stream in.

While it is down a vote cannot become durable, so the API must answer 503 with
Retry-After and never 204; every vote answered 204 before and after must be counted
exactly once. A vote answered 503 while the broker was down is in no log and never
counted. One whose publish overlapped the crash or the broker's return may have been
written although the producer gave up on it (Kafka cannot tell a producer whether a
request that timed out was written), so the test then does what the 503 tells a client
to do, retry with the same Idempotency-Key, and checks every ballot is counted once.
"""

import time

import pytest
from django.conf import settings

from tests.faults.stack import web_and_worker
from testsupport.kafka import topic_events
from testsupport.ledger import (
    ACCEPTED,
    REFUSED,
    VoteStream,
    expected_vote_id,
    resend,
    settle,
    summarize,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_broker_killed_and_restarted_mid_stream(services, process_env, tmp_path):
    try:
        with web_and_worker(
            process_env, tmp_path, label="Broker", polls=4, VOTE_PUBLISH_TIMEOUT="2", VOTE_RETRY_AFTER="3"
        ) as stack:
            env, web, worker, polls = stack.env, stack.web, stack.worker, stack.polls
            with VoteStream(port=web.port, polls=polls, rate=100, threads=16, timeout=15) as stream:
                stream.wait_for(ACCEPTED, 200, timeout=60)

                killed = time.monotonic()
                services.kafka.kill()
                dead = time.monotonic()
                try:
                    # Votes keep coming while the broker is gone: each waits out its 2 s budget.
                    stream.wait_for(REFUSED, 40, since=dead, timeout=60)
                finally:
                    restarting = time.monotonic()
                    services.kafka.start()
                    ready = time.monotonic()
                stream.wait_for(ACCEPTED, 200, since=ready, timeout=90)
            outcomes = stream.outcomes()

            in_topic = {e.vote_id for e in topic_events(brokers=settings.KAFKA_BROKERS, topic=env["KAFKA_TOPIC"])}
            refused = [o for o in outcomes if o.kind == REFUSED]
            written = [o for o in refused if str(expected_vote_id(o)) in in_topic]
            during = [o for o in outcomes if o.started >= dead and o.ended <= restarting]
            # The client's side of a 503: the same vote again, same key, until it is accepted.
            retries = resend(port=web.port, outcomes=refused, first_seq=10_000_000)
            report = settle(
                outcomes=outcomes + retries, poll_ids=polls, brokers=settings.KAFKA_BROKERS, topic=env["KAFKA_TOPIC"]
            )
            print(
                f"\n{report.line()}\nbroker down {restarting - killed:.1f} s, restart took "
                f"{ready - restarting:.1f} s; during the outage: {summarize(during)}; "
                f"{len(written)} of {len(refused)} votes answered 503 were written anyway "
                f"(started {[round(o.started - dead, 2) for o in written]} s after the kill, "
                f"ended {[round(o.ended - restarting, 2) for o in written]} s after the restart began); "
                f"retries: {summarize(retries)}"
            )
            report.assert_exact()
            # Every refused vote was accepted on retry, and each ballot is counted once (above).
            assert {o.key for o in retries if o.kind == ACCEPTED} == {o.key for o in refused}

            # During the outage: 503 with Retry-After and the JSON detail, never 204; and none
            # of those votes reached the log (so none can be counted, retried or not).
            assert len(during) >= 40
            assert {o.kind for o in during} == {REFUSED}, summarize(during)
            assert not {str(expected_vote_id(o)) for o in during} & in_topic
            # A refused vote can only have been written if its publish overlapped the crash
            # (the broker wrote it and died before answering) or the broker's return.
            assert all(o.started <= dead or o.ended >= restarting for o in written), written
            assert {o.retry_after for o in refused} == {"3"}
            assert {o.content_type for o in refused} == {"application/json"}
            assert all(b"vote log is unavailable" in o.body for o in refused)
            # A refusal comes within the publish budget (at most 2 s waiting for metadata, then
            # 2 s for the acknowledgement), not after the client's own 15 s timeout.
            assert max(o.latency for o in refused) < 8
            # The web process never failed otherwise: every answer is a 204 or that 503.
            assert {o.kind for o in outcomes} <= {ACCEPTED, REFUSED}, summarize(outcomes)
            # Votes both before and after the outage are in the books (settle checked each one).
            assert sum(1 for o in outcomes if o.kind == ACCEPTED and o.ended < killed) >= 200
            assert sum(1 for o in outcomes if o.kind == ACCEPTED and o.started > ready) >= 200
            assert worker.alive(), worker.log()[-3000:]
    finally:
        if not services.kafka.is_running():
            services.kafka.start()
        services.kafka.wait_ready()
