"""PostgreSQL stopped (or SIGKILLed) and started again while votes stream in.

The worker must wait, retry the same batch and resume, committing no Kafka offset for
votes it could not write. The web process validates each vote against the poll as read
from the database at most VOTE_TARGET_CACHE_SECONDS before, so votes cast during the
outage fail once that copy is older: none cast later may be answered 204 (those accepted
before are durable in Kafka and counted once the database is back), and the answer must
say "retry later" (503 with Retry-After), not crash. To give the worker votes to hold on to
during the outage, the test also publishes vote events straight to the topic, as a web
process that validated them a moment before the database went away would have.
"""

import random
import time

import pytest
from django.conf import settings
from django.db import connection

from tests.faults.stack import web_and_worker
from testsupport.kafka import group_lag
from testsupport.ledger import (
    ACCEPTED,
    DirectPublisher,
    VoteStream,
    batches_in_log,
    settle,
    summarize,
)
from testsupport.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_postgresql_outage_is_waited_out(services, process_env, tmp_path, how):
    group, topic = process_env["KAFKA_CONSUMER_GROUP"], process_env["KAFKA_TOPIC"]
    publisher = DirectPublisher(brokers=settings.KAFKA_BROKERS, topic=topic)
    rng = random.Random()
    try:
        with web_and_worker(process_env, tmp_path, label="Database") as stack:
            web, worker, polls = stack.web, stack.worker, stack.polls
            with VoteStream(port=web.port, polls=polls, rate=80, threads=12, timeout=15) as stream:
                stream.wait_for(ACCEPTED, 200, timeout=60)
                wait_until(
                    lambda: batches_in_log(worker.log()).get("applied", 0) > 0,
                    timeout=30,
                    what="the worker to apply votes",
                )

                (services.postgres.stop if how == "stop" else services.postgres.kill)()
                down = time.monotonic()
                try:
                    connection.close()  # this process's connection died with the server
                    publisher.publish(polls=polls, n=150, rng=rng)
                    wait_until(
                        lambda: "database unavailable" in worker.log(),
                        timeout=30,
                        what="the worker to notice the outage",
                    )
                    time.sleep(1.0)  # whatever the worker committed before the outage is in by now
                    committed_before, _ = group_lag(brokers=settings.KAFKA_BROKERS, topic=topic, group=group)
                    publisher.publish(polls=polls, n=150, rng=rng)
                    time.sleep(4.0)  # the worker keeps retrying, with backoff
                    committed_after, end = group_lag(brokers=settings.KAFKA_BROKERS, topic=topic, group=group)
                finally:
                    restarting = time.monotonic()
                    services.postgres.start()
                    connection.close()
                    up = time.monotonic()
                stream.wait_for(ACCEPTED, 200, since=up, timeout=90)
            outcomes = stream.outcomes()

            report = settle(
                outcomes=outcomes,
                poll_ids=polls,
                brokers=settings.KAFKA_BROKERS,
                topic=topic,
                direct=publisher.published,
            )
            during = [o for o in outcomes if o.started >= down and o.ended <= restarting]
            print(
                f"\n{report.line()}\nPostgreSQL {how}: down {restarting - down:.1f} s, start took "
                f"{up - restarting:.1f} s; during the outage {summarize(during)}; answers "
                f"{sorted({(o.status, o.content_type, o.retry_after, o.body[:80]) for o in during if o.status})}"
                f"\ncommitted offsets {committed_before} -> {committed_after} while the topic ends at {end}"
            )
            report.assert_exact()

            # Not one offset was committed while nothing could be written, though votes waited.
            assert committed_after == committed_before
            assert end - committed_after >= 300
            assert worker.alive(), worker.log()[-3000:]
            # It met the outage and retried (how many times depends on how long each attempt
            # waits for a pooled connection, DB_POOL_TIMEOUT), then resumed: all counted above.
            assert "database unavailable, retrying the batch" in worker.log(), worker.log()[-3000:]
            # All 300 events published during the outage are counted (settle checked each one).
            assert report.figures["direct"] == 300

            # The web process: no vote cast during the outage was accepted once its copy of
            # the poll (read before the outage) was VOTE_TARGET_CACHE_SECONDS old; the ones
            # accepted before that are counted (settle checked each). Every vote refused was
            # told to retry later: 503 with Retry-After and a JSON detail, not a crash page.
            assert during, "no vote was cast during the outage"
            stale_until = down + settings.VOTE_TARGET_CACHE_SECONDS + 0.5
            assert not [o for o in during if o.kind == ACCEPTED and o.started >= stale_until], summarize(during)
            answered = [o for o in during if o.status is not None and o.kind != ACCEPTED]
            assert answered
            assert {o.status for o in answered} == {503}, summarize(during)
            assert all(o.retry_after and o.content_type == "application/json" for o in answered)
            # After the restart voting resumes and stays up: once a vote is accepted again,
            # every vote sent after it is accepted. (Until then votes may still get 503:
            # the connection pool retries PostgreSQL 1 s, then 2 s, 4 s... apart.)
            back = min(o.ended for o in outcomes if o.kind == ACCEPTED and o.started > up)
            assert {o.kind for o in outcomes if o.started > back} == {ACCEPTED}, summarize(
                [o for o in outcomes if o.started > back]
            )
    finally:
        publisher.close()
        if not services.postgres.is_running():
            services.postgres.start()
        services.postgres.wait_ready()
        connection.close()
