"""The scale-out shape on one machine, as it would run on several.

Two HTTP server processes behind one front door (nginx with deploy/nginx's template, the
file compose runs), two WebSocket server processes behind the same port, three vote
workers in one consumer group, on the three-broker cluster. Votes stream in through the
front door while a fourth worker joins and one of the first leaves (SIGTERM, as a
scale-down sends). Every vote answered 204 is counted exactly once (the per-vote ledger
of the fault tests), and every viewer, whichever WebSocket process holds it, ends on
the poll's final totals.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import ExitStack

import pytest
from django.conf import settings
from websockets.sync.client import connect

from tests.http import request
from testsupport.frontdoor import FrontDoor, ProxiedWebServer
from testsupport.ledger import (
    ACCEPTED,
    VoteStream,
    batches_in_log,
    polls_on_every_partition,
    production_env,
    settle,
    summarize,
)
from testsupport.processes import WorkerProcess, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

OPTIONS = ("option1", "option2", "option3", "option4")


class Viewer:
    """A live results page: a WebSocket on /ws/polls/<id>, keeping the newest totals."""

    def __init__(self, *, port: int, poll_id: int) -> None:
        self.poll_id = poll_id
        self.latest: dict | None = None
        self.messages = 0
        self._exit = ExitStack()
        self._socket = self._exit.enter_context(connect(f"ws://127.0.0.1:{port}/ws/polls/{poll_id}", open_timeout=15))
        self._thread = threading.Thread(target=self._read, daemon=True, name=f"viewer-{poll_id}")
        self._thread.start()

    def _read(self) -> None:
        for text in self._socket:
            message = json.loads(text)
            if message.get("type") in ("poll.snapshot", "poll.updated"):
                self.messages += 1
                if self.latest is None or message["version"] >= self.latest["version"]:
                    self.latest = message

    def counts(self) -> tuple[int, ...] | None:
        return None if self.latest is None else tuple(self.latest[o] for o in OPTIONS)

    def close(self) -> None:
        self._exit.close()
        self._thread.join(10)


def test_votes_counted_once_and_viewers_on_both_ws_processes_updated_while_workers_scale(cluster_env, tmp_path):
    env = production_env(cluster_env)
    topic, group = env["KAFKA_TOPIC"], env["KAFKA_CONSUMER_GROUP"]
    http = [ProxiedWebServer(env=env, log_dir=tmp_path) for _ in range(2)]
    ws = [ProxiedWebServer(env=env, log_dir=tmp_path) for _ in range(2)]
    workers = [WorkerProcess(env=env, log_dir=tmp_path, group=group, name=f"worker-{n}") for n in (1, 2, 3)]
    front = FrontDoor(http=http, ws=ws, log_dir=tmp_path)
    viewers: list[Viewer] = []
    added = WorkerProcess(env=env, log_dir=tmp_path, group=group, name="worker-4")
    for server in (*http, *ws):
        server.start()
    for worker in workers:
        worker.start(wait=False)
    for worker in workers:
        worker.wait_assigned(topic, timeout=60)
    front.start()
    try:
        polls = polls_on_every_partition(front.url, partitions=settings.KAFKA_TOPIC_PARTITIONS)
        # Two viewers a poll, one after the other: the front door alternates between the
        # WebSocket processes, so each poll has a viewer on each.
        viewers = [Viewer(port=front.port, poll_id=poll_id) for poll_id in polls for _ in range(2)]
        wait_until(lambda: all(v.latest is not None for v in viewers), timeout=30, what="every viewer's snapshot")

        with VoteStream(port=front.port, polls=polls, rate=80, threads=12, timeout=15) as stream:
            stream.wait_for(ACCEPTED, 300, timeout=60)
            added.start()
            joined = time.monotonic()
            wait_until(
                lambda: batches_in_log(added.log()).get("applied", 0) > 0,
                timeout=60,
                what="the added worker to apply votes",
            )
            stream.wait_for(ACCEPTED, 300, since=joined, timeout=60)
            leaving = workers[0]
            assert leaving.terminate() == 0, leaving.log()[-3000:]
            left = time.monotonic()
            stream.wait_for(ACCEPTED, 300, since=left, timeout=60)
        outcomes = stream.outcomes()

        report = settle(outcomes=outcomes, poll_ids=polls, brokers=cluster_env["KAFKA_BROKERS"].split(","), topic=topic)
        print(
            f"\n{report.line()}\nthrough the front door: {summarize(outcomes)}; applied per worker: "
            f"{ {w.name: batches_in_log(w.log()).get('applied', 0) for w in (*workers, added)} }"
        )
        report.assert_exact()
        assert {o.kind for o in outcomes} == {ACCEPTED}, summarize(outcomes)

        # Every viewer, on either WebSocket process, ends on its poll's counts.
        final = {poll_id: request("GET", f"{front.url}/polls/{poll_id}").json() for poll_id in polls}
        expected = {poll_id: tuple(body[o] for o in OPTIONS) for poll_id, body in final.items()}
        assert sum(sum(counts) for counts in expected.values()) == report.figures["counters"]
        wait_until(
            lambda: all(v.counts() == expected[v.poll_id] for v in viewers),
            timeout=30,
            what="every viewer to show the final counts",
        )
        assert all(v.messages > 1 for v in viewers)  # updated live, not only the snapshot
        for worker in (*workers[1:], added):
            assert worker.alive(), worker.log()[-3000:]
            assert batches_in_log(worker.log()).get("applied", 0) > 0, f"{worker.name} applied nothing"
    finally:
        for viewer in viewers:
            viewer.close()
        front.terminate()
        for process in (*http, *ws, *workers, added):
            process.kill()

    # The front door spread the work: both HTTP processes answered votes, and both
    # WebSocket processes held viewers (nginx logs a WebSocket when it closes).
    used_http = front.upstreams("/polls/")
    used_ws = front.upstreams("/ws/")
    assert set(used_http) == {f"127.0.0.1:{s.port}" for s in http}, used_http
    assert set(used_ws) == {f"127.0.0.1:{s.port}" for s in ws}, used_ws
