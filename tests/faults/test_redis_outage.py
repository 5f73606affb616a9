"""Redis stopped while votes stream in: voting without a key does not depend on it.

Redis carries the live updates (the channel layer) and shared caches; a vote's path is
the API, Kafka and the worker. With Redis gone every vote without an Idempotency-Key
must still be accepted and applied. A keyed vote needs its key's record (in Redis) to
count once: it gets 503 with Retry-After, and its retry once Redis is back counts once.
Once it is back, a WebSocket viewer gets live updates again.
"""

import json
import time
from datetime import UTC, datetime

import pytest
from django.conf import settings
from websockets.sync.client import connect

from polls.models import Vote
from tests.faults.stack import web_and_worker
from tests.http import request
from testsupport.ledger import ACCEPTED, REFUSED, VoteStream, create_poll, resend, settle, summarize
from testsupport.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def _vote_for_option1(port: int, poll_id: int) -> int:
    stream = VoteStream(port=port, polls={poll_id: 1}, rate=1, threads=1, max_votes=1, first_seq=10**6)
    return stream.start().join()[0].status


def test_redis_stopped_voting_keeps_working(services, process_env, tmp_path):
    try:
        with web_and_worker(process_env, tmp_path, label="Redis") as stack:
            env, web, worker, polls = stack.env, stack.web, stack.worker, stack.polls
            unkeyed_poll = create_poll(web.url, question="Redis poll without keys")
            unkeyed = []
            with VoteStream(port=web.port, polls=polls, rate=80, threads=12) as stream:
                stream.wait_for(ACCEPTED, 150, timeout=60)

                services.redis.stop()
                down, down_wall = time.monotonic(), datetime.now(UTC)
                try:
                    stream.wait_for(REFUSED, 300, since=down, timeout=90)
                    for _ in range(150):
                        unkeyed.append(
                            request("POST", f"{web.url}/polls/{unkeyed_poll}/vote", {"option": 1}, timeout=15)
                        )
                    wait_until(
                        lambda: Vote.objects.filter(poll_id=unkeyed_poll).count() == 150,
                        timeout=60,
                        what="the votes without a key applied while Redis is down",
                    )
                finally:
                    restarting, up_wall = time.monotonic(), datetime.now(UTC)
                    services.redis.start()
                    up = time.monotonic()
                stream.wait_for(ACCEPTED, 150, since=up, timeout=60)
            outcomes = stream.outcomes()
            refused = [o for o in outcomes if o.kind == REFUSED]
            # The client's side of a 503: the same vote again, same key, until it is accepted.
            retries = resend(port=web.port, outcomes=refused, first_seq=10_000_000)

            report = settle(
                outcomes=outcomes + retries,
                poll_ids=polls,
                brokers=settings.KAFKA_BROKERS,
                topic=env["KAFKA_TOPIC"],
                other_polls=[unkeyed_poll],
            )
            during = [o for o in outcomes if o.started >= down and o.ended <= restarting]
            applied_during = Vote.objects.filter(
                poll_id=unkeyed_poll, applied_at__gt=down_wall, applied_at__lt=up_wall
            ).count()
            print(
                f"\n{report.line()}\nRedis down {restarting - down:.1f} s: keyed {summarize(during)}; "
                f"{applied_during} votes without a key applied meanwhile; retries: {summarize(retries)}"
            )
            report.assert_exact()
            # Votes without a key were all accepted during the outage, and applied while Redis was down.
            assert {answer.status for answer in unkeyed} == {204}
            assert applied_during == 150
            # Keyed votes: 503 with Retry-After (never a 500), each accepted on retry and counted once (above).
            assert {o.kind for o in outcomes} <= {ACCEPTED, REFUSED}, summarize(outcomes)
            assert len(during) >= 300 and {o.kind for o in during} == {REFUSED}, summarize(during)
            assert all(o.retry_after and b"Idempotency-Key cannot be checked" in o.body for o in refused)
            assert {o.key for o in retries if o.kind == ACCEPTED} == {o.key for o in refused}
            assert worker.alive() and web.alive()

            # Live updates resume: a viewer that connects now sees the next vote land.
            poll_id = next(iter(polls))
            with connect(f"ws://127.0.0.1:{web.port}/ws/polls/{poll_id}", open_timeout=10) as ws:
                snapshot = json.loads(ws.recv(timeout=10))
                assert snapshot["type"] == "poll.snapshot"
                assert _vote_for_option1(web.port, poll_id) == 204
                deadline = time.monotonic() + 20
                while True:
                    message = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
                    if message["type"] == "poll.updated" and message["total"] > snapshot["total"]:
                        break
                assert message["total"] == snapshot["total"] + 1
                assert message["option1"] == snapshot["option1"] + 1
    finally:
        if not services.redis.is_running():
            services.redis.start()
        services.redis.wait_ready()
