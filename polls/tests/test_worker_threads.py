"""The worker's applying threads: batches of different partitions in the database at once.

These drive VoteWorker.run() with a stand-in consumer (polls scripted, commits recorded)
against the real database, and hold or fail chosen batches, so the interleavings are
the same on every run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from django.db import OperationalError, connections
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from polls.domain.services import counters_verify
from polls.models import Vote
from polls.tests.factories import counts, make_poll, vote_event
from polls.worker import apply as worker_module
from polls.worker.batches import DecodedBatch, WorkerStopped
from polls.worker.loop import VoteWorker, _InFlight
from testsupport.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

TOPIC = "votes"
P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


def records(partition: TopicPartition, poll, first: int, count: int) -> list[ConsumerRecord]:
    """`count` valid votes for `poll` at offsets first, first + 1, ... of `partition`."""
    return [
        ConsumerRecord(
            partition.topic,
            partition.partition,
            -1,
            offset,
            0,
            0,
            str(poll.pk).encode(),
            vote_event(poll, 1 + offset % 4).to_bytes(),
            [],
            None,
            -1,
            -1,
            -1,
        )
        for offset in range(first, first + count)
    ]


class ScriptedConsumer:
    """Stands in for KafkaConsumer: each poll returns the script's next step; commits are recorded.

    A step is a {partition: records} dict, or a callable run at that poll (a rebalance)
    whose result is returned. After the script, polls return nothing.
    """

    def __init__(self, script: list, partitions=(P0, P1)) -> None:
        self.script = list(script)
        self.assigned = set(partitions)
        self.commits: list[dict[TopicPartition, int]] = []
        self.polls = 0

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict:
        self.polls += 1
        if not self.script:
            time.sleep(timeout_ms / 1000)
            return {}
        step = self.script.pop(0)
        return step() if callable(step) else step

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def commit(self, offsets) -> None:
        self.commits.append({partition: meta.offset for partition, meta in offsets.items()})

    def commit_async(self, offsets, callback=None) -> None:
        self.commit(offsets)

    def highwater(self, partition):
        return None

    def committed(self, partition: TopicPartition) -> list[int]:
        """Every offset committed for `partition`, in order."""
        return [offsets[partition] for offsets in self.commits if partition in offsets]


class NullProducer:
    def send(self, *args, **kwargs) -> None:
        raise AssertionError("nothing here is dead-lettered")

    def flush(self) -> None:
        pass


class ObservedWorker(VoteWorker):
    """A VoteWorker whose batches pass through `before_apply(partitions)` in the applying thread."""

    def __init__(
        self,
        consumer: ScriptedConsumer,
        *,
        before_apply: Callable[[frozenset[int]], None] = lambda p: None,
        apply_threads: int = 2,
        batch_size: int = 10,
    ) -> None:
        super().__init__(
            consumer=consumer,
            dead_letter_producer=NullProducer(),
            batch_size=batch_size,
            batch_wait_ms=20,
            apply_threads=apply_threads,
            db_retry_max_wait=0.2,
        )
        self.before_apply = before_apply
        self.lock = threading.Lock()
        self.running: list[frozenset[int]] = []  # partitions of the batches in the database now
        self.overlaps: list[tuple[frozenset[int], frozenset[int]]] = []  # batches that shared a partition
        self.most_at_once = 0
        self.started: list[frozenset[int]] = []

    def apply(self, batch: DecodedBatch):
        partitions = frozenset(record.partition for record in batch.records)
        with self.lock:
            self.overlaps += [(partitions, other) for other in self.running if partitions & other]
            self.running.append(partitions)
            self.started.append(partitions)
            self.most_at_once = max(self.most_at_once, len(self.running))
        try:
            self.before_apply(partitions)
            return super().apply(batch)
        finally:
            with self.lock:
                self.running.remove(partitions)


class Running:
    """worker.run() in a thread; `stop()` ends it and returns what it raised, if anything."""

    def __init__(self, worker: VoteWorker) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc
        finally:
            connections.close_all()

    def stop(self) -> BaseException | None:
        self.worker.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the worker did not stop"
        return self.error


def held_until(release: threading.Event, partition: int, times: int = 1) -> Callable[[frozenset[int]], None]:
    """A before_apply that holds the first `times` batches of `partition` until `release` is set."""
    left = [times]

    def before(partitions: frozenset[int]) -> None:
        if partition in partitions and left[0] > 0:
            left[0] -= 1
            assert release.wait(30), "never released"

    return before


def test_a_batch_of_one_partition_commits_while_another_partitions_batch_is_still_in_the_database():
    red, blue = make_poll(), make_poll()
    consumer = ScriptedConsumer(
        [
            {P0: records(P0, red, 0, 10)},
            {P1: records(P1, blue, 0, 10)},
            {P0: records(P0, red, 10, 10)},
        ]
    )
    release = threading.Event()
    worker = ObservedWorker(consumer, before_apply=held_until(release, 0))
    running = Running(worker)
    try:
        wait_until(lambda: consumer.committed(P1) == [10], timeout=15, what="partition 1's batch committed")
        time.sleep(0.3)  # time enough for a wrong worker to start or commit more of partition 0
        # Partition 0's first batch is still in the database: none of its offsets are
        # committed and its second batch waits for it.
        assert consumer.committed(P0) == []
        assert worker.started.count(frozenset({0})) == 1
        assert sum(counts(blue)) == 10 and sum(counts(red)) == 0
        release.set()
        wait_until(lambda: consumer.committed(P0)[-1:] == [20], timeout=15, what="partition 0 committed")
    finally:
        release.set()
        assert running.stop() is None
    assert consumer.committed(P0)[:2] == [10, 20]  # in order, each after its batch
    assert worker.overlaps == []
    assert worker.most_at_once == 2
    assert sum(counts(red)) == 20 and sum(counts(blue)) == 10
    assert counters_verify() == []


def test_the_batches_of_one_partition_never_run_at_once():
    red, blue = make_poll(), make_poll()
    script = []
    for first in range(0, 60, 10):
        script += [{P0: records(P0, red, first, 10)}, {P1: records(P1, blue, first, 10)}]
    consumer = ScriptedConsumer(script)
    worker = ObservedWorker(consumer, before_apply=lambda partitions: time.sleep(0.02))
    running = Running(worker)
    try:
        wait_until(lambda: sum(counts(red)) + sum(counts(blue)) == 120, timeout=30, what="every vote")
        wait_until(
            lambda: consumer.committed(P0)[-1:] == [60] and consumer.committed(P1)[-1:] == [60],
            timeout=15,
            what="the last offsets",
        )
    finally:
        assert running.stop() is None
    assert worker.overlaps == []
    for partition in (P0, P1):
        offsets = consumer.committed(partition)
        assert offsets == sorted(offsets)


def test_a_batch_that_fails_while_another_is_in_the_database_stops_the_worker_after_that_one_commits():
    red, blue = make_poll(), make_poll()
    consumer = ScriptedConsumer([{P0: records(P0, red, 0, 10)}, {P1: records(P1, blue, 0, 10)}])
    blue_started = threading.Event()
    release_blue = threading.Event()

    def before(partitions: frozenset[int]) -> None:
        if 0 in partitions:
            assert blue_started.wait(15)
            raise RuntimeError("a bug in the batch of partition 0")
        blue_started.set()
        assert release_blue.wait(15)

    worker = ObservedWorker(consumer, before_apply=before)
    running = Running(worker)
    try:
        assert blue_started.wait(15)
        time.sleep(0.2)  # partition 0's batch fails meanwhile
        release_blue.set()
        running.thread.join(15)
    finally:
        release_blue.set()
        error = running.stop()
    assert isinstance(error, RuntimeError)
    assert consumer.committed(P0) == []  # never past what is not in the database
    assert consumer.committed(P1) == [10]  # the batch in flight when the other failed still counts
    assert sum(counts(blue)) == 10 and sum(counts(red)) == 0


def test_a_database_outage_holds_only_the_batch_that_met_it_and_it_resumes(monkeypatch):
    red, blue = make_poll(), make_poll()
    consumer = ScriptedConsumer([{P0: records(P0, red, 0, 10)}, {P1: records(P1, blue, 0, 10)}])
    down = threading.Event()
    down.set()
    real_votes_apply = worker_module.votes_apply

    def votes_apply(*, events):
        if down.is_set() and events[0].poll_id == red.pk:
            raise OperationalError("the server closed the connection")
        return real_votes_apply(events=events)

    monkeypatch.setattr(worker_module, "votes_apply", votes_apply)
    worker = ObservedWorker(consumer)
    running = Running(worker)
    try:
        wait_until(lambda: consumer.committed(P1) == [10], timeout=15, what="the other partition's batch")
        assert consumer.committed(P0) == []
        down.clear()
        wait_until(lambda: consumer.committed(P0) == [10], timeout=15, what="the held batch after the outage")
    finally:
        down.clear()
        assert running.stop() is None
    assert sum(counts(red)) == 10 and sum(counts(blue)) == 10


def test_stopping_during_an_outage_commits_what_was_applied_and_nothing_else(monkeypatch):
    red, blue = make_poll(), make_poll()
    consumer = ScriptedConsumer([{P0: records(P0, red, 0, 10)}, {P1: records(P1, blue, 0, 10)}])
    real_votes_apply = worker_module.votes_apply

    def votes_apply(*, events):
        if events[0].poll_id == red.pk:
            raise OperationalError("the server closed the connection")
        return real_votes_apply(events=events)

    monkeypatch.setattr(worker_module, "votes_apply", votes_apply)
    worker = ObservedWorker(consumer)
    running = Running(worker)
    wait_until(lambda: sum(counts(blue)) == 10, timeout=15, what="the other partition's votes")
    assert running.stop() is None
    assert consumer.committed(P0) == []
    assert consumer.committed(P1)[-1] == 10  # the last, waited-for commit on the way out
    assert worker.total.applied == 10


def test_a_revoked_partition_is_neither_applied_from_the_read_ahead_nor_committed():
    red, blue = make_poll(), make_poll()
    release = threading.Event()

    def revoke_partition_0() -> dict:
        consumer.assigned = {P1}
        return {P1: records(P1, blue, 0, 10)}

    consumer = ScriptedConsumer(
        [
            {P0: records(P0, red, 0, 10)},  # in the database, held, while partition 0 is revoked
            {P0: records(P0, red, 10, 10)},  # read ahead: its new owner reads it again
            revoke_partition_0,
        ]
    )
    worker = ObservedWorker(consumer, before_apply=held_until(release, 0))
    running = Running(worker)
    try:
        wait_until(lambda: consumer.committed(P1) == [10], timeout=15, what="partition 1's batch")
        release.set()
        wait_until(lambda: sum(counts(red)) == 10, timeout=15, what="the held batch")
        time.sleep(0.3)
        # Given back later (its new owner has committed past 10 meanwhile): stopping now
        # must not commit the held batch's offset from before.
        consumer.assigned = {P0, P1}
    finally:
        release.set()
        assert running.stop() is None
    assert sum(counts(red)) == 10  # the read-ahead of the revoked partition was dropped
    assert consumer.committed(P0) == []  # and partition 0 was not ours to commit, then or after
    assert worker.started.count(frozenset({0})) == 1


def test_a_partition_revoked_and_given_back_is_not_committed_from_before_on_the_way_out():
    """Another worker held it in between and committed past what this one applied: a
    commit of the old offset on the way out would make the group read all that again."""
    red = make_poll()
    consumer = ScriptedConsumer([{P0: records(P0, red, 0, 10)}], partitions=(P0,))
    worker = ObservedWorker(consumer)
    rebalanced = threading.Event()

    def revoke_and_give_back() -> dict:  # in the polling thread, inside poll(), as Kafka's rebalances
        worker.rebalance_listener.on_partitions_revoked({P0})
        worker.rebalance_listener.on_partitions_assigned({P0})
        rebalanced.set()
        return {}

    running = Running(worker)
    try:
        wait_until(lambda: consumer.committed(P0) == [10], timeout=15, what="the batch's commit")
        consumer.script.append(revoke_and_give_back)
        assert rebalanced.wait(15)
    finally:
        assert running.stop() is None
    assert consumer.committed(P0) == [10]  # nothing more on the way out
    assert sum(counts(red)) == 10


def test_a_partition_given_back_from_its_last_commit_drops_the_read_ahead_it_gets_again():
    red = make_poll()
    release = threading.Event()
    first, second = records(P0, red, 0, 10), records(P0, red, 10, 10)
    consumer = ScriptedConsumer(
        [
            {P0: first},  # in the database, held
            {P0: second},  # read ahead
            # A rebalance gave partition 0 back, from its last committed offset (none yet): the
            # records come again, and the read-ahead above must not be applied a second time.
            {P0: first},
            {P0: second},
        ],
        partitions=(P0,),
    )
    worker = ObservedWorker(consumer, before_apply=held_until(release, 0))
    running = Running(worker)
    try:
        wait_until(lambda: not consumer.script, timeout=15, what="every poll of the script")
        release.set()
        wait_until(lambda: consumer.committed(P0)[-1:] == [20], timeout=15, what="the last offset")
    finally:
        release.set()
        assert running.stop() is None
    assert sum(counts(red)) == 20
    assert worker.total.applied == 20
    assert worker.total.duplicates == 10  # the first batch redelivered; not the read-ahead too
    assert consumer.committed(P0) == sorted(consumer.committed(P0))
    assert Vote.objects.count() == 20


@pytest.mark.parametrize("ended", [WorkerStopped(), RuntimeError("a bug")])
def test_a_partition_whose_batch_did_not_commit_is_never_handed_out_again(ended):
    """Its later records would commit offsets past the batch that is not in the database."""
    red = make_poll()
    worker = ObservedWorker(ScriptedConsumer([]))
    first, later = records(P0, red, 0, 10), records(P0, red, 10, 10)
    failed: Future = Future()
    failed.set_exception(ended)
    in_flight = {0: _InFlight(failed, {P0: first[-1].offset + 1})}
    busy = {P0: 0}
    pending = {P0: later}
    with ThreadPoolExecutor(max_workers=1) as applier:
        try:
            worker._collect(in_flight, busy, block=True)
        except RuntimeError:
            pass
        worker._dispatch([applier, applier], pending, in_flight, busy)
    assert in_flight == {}
    assert busy == {P0: 0}
    assert worker.started == []
    assert worker.consumer.commits == []


def test_on_sqlite_one_thread_applies(monkeypatch):
    monkeypatch.setattr(connections["default"], "vendor", "sqlite")
    worker = ObservedWorker(ScriptedConsumer([]), apply_threads=4)
    assert worker.apply_threads == 1


def test_each_rebalance_logs_the_partitions_it_assigned(caplog):
    """Operators see what a rebalance gave the worker; the end-to-end tests wait for it."""
    listener = ObservedWorker(ScriptedConsumer([], partitions=(P0,))).rebalance_listener
    with caplog.at_level("INFO", logger="polls.worker"):
        listener.on_partitions_assigned({P1, P0, TopicPartition("polls.dlq", 3)})
        listener.on_partitions_assigned(set())
    assert [r.getMessage() for r in caplog.records] == [
        f"partitions assigned: polls.dlq[3], {TOPIC}[0,1]",
        "partitions assigned: none",
    ]
