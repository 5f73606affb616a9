"""Redis stopped while votes stream in: voting does not depend on it.

Redis carries the live updates (the channel layer) and shared caches; a vote's path is
the API, Kafka and the worker. With Redis gone every vote must still be accepted and
applied; once it is back, a WebSocket viewer gets live updates again.
"""

import json
import time
from datetime import datetime, timezone

import pytest
from django.conf import settings
from websockets.sync.client import connect

from polls.models import Vote
from tests.faults.load import ACCEPTED, VoteStream, settle, summarize
from tests.faults.stack import web_and_worker

pytestmark = pytest.mark.django_db(transaction=True)


def _vote_for_option1(port: int, poll_id: int) -> int:
    stream = VoteStream(port=port, polls={poll_id: 1}, rate=1, threads=1, max_votes=1, first_seq=10**6)
    return stream.start().join()[0].status


def test_redis_stopped_voting_keeps_working(services, process_env, tmp_path):
    try:
        with web_and_worker(process_env, tmp_path, label="Redis") as stack:
            env, web, worker, polls = stack.env, stack.web, stack.worker, stack.polls
            with VoteStream(port=web.port, polls=polls, rate=80, threads=12) as stream:
                stream.wait_for(ACCEPTED, 150, timeout=60)

                services.redis.stop()
                down, down_wall = time.monotonic(), datetime.now(timezone.utc)
                try:
                    stream.wait_for(ACCEPTED, 300, since=down, timeout=90)
                finally:
                    restarting, up_wall = time.monotonic(), datetime.now(timezone.utc)
                    services.redis.start()
                    up = time.monotonic()
                stream.wait_for(ACCEPTED, 150, since=up, timeout=60)
            outcomes = stream.outcomes()

            report = settle(outcomes=outcomes, poll_ids=polls, brokers=settings.KAFKA_BROKERS,
                            topic=env["KAFKA_TOPIC"])
            during = [o for o in outcomes if o.started >= down and o.ended <= restarting]
            applied_during = Vote.objects.filter(poll_id__in=polls, applied_at__gt=down_wall, applied_at__lt=up_wall).count()
            print(f"\n{report.line()}\nRedis down {restarting - down:.1f} s: {summarize(during)}; "
                  f"{applied_during} votes applied meanwhile")
            report.assert_exact()
            # Every vote was accepted, during the outage too, and applied while Redis was down.
            assert {o.kind for o in outcomes} == {ACCEPTED}, summarize(outcomes)
            assert len(during) >= 300
            assert applied_during >= 100
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
