"""The vote worker SIGKILLed again and again, and a rebalance between two workers, mid-stream.

Votes stream through a real web server process into Kafka the whole time; every vote
answered 204 must end up counted exactly once, each in its own row.
"""

import random
import time
from datetime import UTC, datetime

import pytest
from django.conf import settings

from polls.models import Vote
from testsupport.ledger import (
    ACCEPTED,
    VoteStream,
    batches_in_log,
    polls_on_every_partition,
    production_env,
    settle,
    summarize,
)
from testsupport.processes import WebServer, WorkerProcess, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

KILLS = 7


def _worker(process_env, tmp_path, name: str) -> WorkerProcess:
    return WorkerProcess(env=process_env, log_dir=tmp_path, group=process_env["KAFKA_CONSUMER_GROUP"], name=name)


def _applied(worker: WorkerProcess) -> int:
    return batches_in_log(worker.log()).get("applied", 0)


def _wait_applied(worker: WorkerProcess, stream: VoteStream, more_than: int = 0, timeout: float = 60) -> None:
    try:
        wait_until(
            lambda: _applied(worker) > more_than, timeout=timeout, what=f"{worker.name} to apply over {more_than} votes"
        )
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}; stream so far {summarize(stream.outcomes())}; {worker.name} log:\n{worker.log()[-4000:]}"
        ) from None


@pytest.fixture
def web_server(process_env, tmp_path):
    """The web process, with the production rate limits (see load.production_env)."""
    server = WebServer(env=production_env(process_env), log_dir=tmp_path)
    server.start()
    yield server
    server.kill()


def test_worker_sigkilled_at_random_points_many_times(process_env, web_server, tmp_path):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    polls = polls_on_every_partition(web_server.url, partitions=settings.KAFKA_TOPIC_PARTITIONS)
    workers: list[WorkerProcess] = []
    kills: list[str] = []
    try:
        worker = _worker(process_env, tmp_path, "worker-0")
        worker.start()
        workers.append(worker)
        with VoteStream(port=web_server.port, polls=polls, rate=150, threads=12, max_seconds=240) as stream:
            for n in range(KILLS):
                # Random points: while it starts and joins the group, or while it applies
                # batches (between poll, DB commit and offset commit).
                if n % 3 == 2:
                    moment = rng.uniform(0.5, 3.0)
                    time.sleep(moment)
                    where = f"{moment:.2f} s after launch"
                else:
                    _wait_applied(worker, stream)
                    moment = rng.uniform(0.0, 1.5)
                    time.sleep(moment)
                    where = f"{moment:.2f} s after its first batch"
                applied = _applied(worker)
                worker.kill()
                kills.append(f"{worker.name} killed {where}, having applied {applied}")
                worker = _worker(process_env, tmp_path, f"worker-{n + 1}")
                worker.start(wait=False)  # at once, as a supervisor restarts it
                workers.append(worker)
            # The last one keeps running: votes must flow again, then the stream stops.
            _wait_applied(worker, stream)
            stream.wait_for(ACCEPTED, 200, since=time.monotonic(), timeout=60)
        outcomes = stream.outcomes()

        report = settle(
            outcomes=outcomes, poll_ids=polls, brokers=settings.KAFKA_BROKERS, topic=process_env["KAFKA_TOPIC"]
        )
        logs = {w.name: batches_in_log(w.log()) for w in workers}
        print(f"\nseed {seed}; {report.line()}\n" + "\n".join(kills) + f"\nworker batches: {logs}")
        report.assert_exact()
        # The web process and Kafka were never touched: every vote was accepted.
        assert summarize(outcomes)[ACCEPTED] == len(outcomes) >= 500, summarize(outcomes)
        assert len(kills) == KILLS
        # Work was really interrupted: most incarnations had applied votes when killed.
        assert sum(1 for w in workers[:-1] if batches_in_log(w.log()).get("applied", 0) > 0) >= KILLS // 2
    finally:
        for w in workers:
            w.kill()


def test_two_workers_in_one_group_rebalance_mid_stream(process_env, web_server, tmp_path):
    polls = polls_on_every_partition(web_server.url, partitions=settings.KAFKA_TOPIC_PARTITIONS)
    first = _worker(process_env, tmp_path, "worker-a")
    second = _worker(process_env, tmp_path, "worker-b")
    try:
        first.start()
        with VoteStream(port=web_server.port, polls=polls, rate=150, threads=12, max_seconds=180) as stream:
            stream.wait_for(ACCEPTED, 200, timeout=60)
            _wait_applied(first, stream, timeout=30)

            # A second worker joins: the group rebalances, partitions are split between them.
            second.start()
            _wait_applied(second, stream)
            applied_a = _applied(first)
            _wait_applied(first, stream, applied_a, timeout=30)

            # One of the pair dies mid-batch: after its session times out the other takes
            # its partitions back, from the last committed offsets.
            first.kill()
            killed_at, killed_wall = time.monotonic(), datetime.now(UTC)
            applied_b = _applied(second)
            stream.wait_for(ACCEPTED, 400, since=killed_at, timeout=90)
            _wait_applied(second, stream, applied_b + 400)
        outcomes = stream.outcomes()

        report = settle(
            outcomes=outcomes, poll_ids=polls, brokers=settings.KAFKA_BROKERS, topic=process_env["KAFKA_TOPIC"]
        )
        a, b = batches_in_log(first.log()), batches_in_log(second.log())
        print(f"\n{report.line()}\nworker-a {a}\nworker-b {b}")
        report.assert_exact()
        assert summarize(outcomes)[ACCEPTED] == len(outcomes), summarize(outcomes)
        assert a["applied"] > 0 and b["applied"] > 0
        # worker-b took over every partition: each poll has votes applied after the kill.
        assert second.alive(), second.log()[-3000:]
        late = {p: Vote.objects.filter(poll_id=p, applied_at__gt=killed_wall).count() for p in polls}
        assert all(late.values()), late
    finally:
        first.kill()
        second.kill()
