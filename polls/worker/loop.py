"""The vote worker's loop: polls Kafka and hands batches to applying threads.

At-least-once delivery plus idempotent application gives exactly-once counting:

    poll a batch ─► decode (poison → dead-letter topic) ─► votes_apply in one DB
    transaction ─► DB commit ─► commit Kafka offsets

The next batch is polled and decoded while the previous one is in the database.

Offsets are committed only after the database committed, so a crash anywhere before
the offset commit means redelivery, and redelivered votes collide on their vote_id.

The loop is this module; each step is a small piece of its own: decoding
(polls.worker.batches), the transaction and its retries (polls.worker.apply), the dead
letters (polls.worker.dead_letters), the offsets (polls.worker.offsets), the progress
lines (polls.worker.progress) and the lag and stall watchdog (polls.worker.lag).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from django.db import DEFAULT_DB_ALIAS, connection, connections
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from polls.worker.apply import BatchApplier
from polls.worker.batches import BatchOutcome, DecodedBatch, RetryWait, WorkerStopped, batch_decode
from polls.worker.dead_letters import DeadLetterWriter
from polls.worker.lag import Activity, LagMonitor
from polls.worker.offsets import OffsetCommits
from polls.worker.pending import Pending, pending_add, pending_take
from polls.worker.progress import ProgressReport

logger = logging.getLogger(__name__)


def _close_connection() -> None:
    # `connection` is per thread: looked up here, in the thread that runs this.
    connection.close()


@dataclass
class _InFlight:
    """A batch handed to an applying thread, with the offset past its last record of each partition."""

    future: Future[BatchOutcome]
    next_offsets: dict[TopicPartition, int]


class VoteWorker:
    """One consumer of the vote topic. `run()` loops until `stop()`; tests call `consume_batch()`."""

    def __init__(
        self,
        *,
        consumer: KafkaConsumer,
        dead_letter_producer: KafkaProducer,
        batch_size: int,
        batch_wait_ms: int,
        db_retry_max_wait: float = 5.0,
        stop_event: threading.Event | None = None,
        progress_interval: float = 0.0,
        apply_threads: int = 1,
        stall_timeout: float = 0.0,
        on_stall: Callable[[], None] | None = None,
    ) -> None:
        self.consumer = consumer
        self.dead_letter_producer = dead_letter_producer
        self.batch_size = batch_size
        self.batch_wait_ms = batch_wait_ms
        # SQLite has one writer at a time: a second transaction would only wait for it.
        sqlite = connections[DEFAULT_DB_ALIAS].vendor == "sqlite"
        self.apply_threads = 1 if sqlite else max(1, apply_threads)
        self._stop = stop_event or threading.Event()
        self._retry = RetryWait(stop=self._stop, max_seconds=db_retry_max_wait)
        self.applier = BatchApplier(
            dead_letters=DeadLetterWriter(producer=dead_letter_producer, retry=self._retry), retry=self._retry
        )
        self.offsets = OffsetCommits(consumer)
        self.rebalance_listener = self.offsets.rebalance_listener
        # Lag from the broker and the stall watchdog, in a thread of their own while run()
        # runs; a consumer that is no KafkaConsumer (a test's script) has no broker to ask.
        self.activity = Activity()
        self.lag_monitor = (
            LagMonitor(
                bootstrap_servers=consumer.config["bootstrap_servers"],
                group_id=consumer.config["group_id"],
                partitions=lambda: self.consumer.assignment() or set(),
                activity=self.activity,
                stall_timeout=stall_timeout,
                on_stall=on_stall,
            )
            if isinstance(consumer, KafkaConsumer)
            else None
        )
        self.progress = ProgressReport(interval=progress_interval, lag_monitor=self.lag_monitor)
        self.total = self.progress.total

    @property
    def db_retry_max_wait(self) -> float:
        """The longest wait between two tries of a batch (the database's, or its dead letters')."""
        return self._retry.max_seconds

    @db_retry_max_wait.setter
    def db_retry_max_wait(self, seconds: float) -> None:
        self._retry.max_seconds = seconds

    def subscribe(self, topics: Sequence[str]) -> None:
        """Subscribe the consumer to the vote topic, with the listener that forgets revoked partitions."""
        self.consumer.subscribe(list(topics), listener=self.rebalance_listener)

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Poll, decode and apply batches until `stop()`.

        `apply_threads` threads decode and apply batches, each on its own database
        connection, while this one polls: the database's work and its commit leave the
        GIL free, and with two threads one batch's statements run while the other's
        commit waits for its fsync. Votes are keyed by poll, so the batches of
        different partitions touch different polls: a partition is in at most one
        thread's batch at a time, and its batches go to the database one after the
        other, in offset order. The offsets of a batch are committed only after its
        transaction committed, and so never past a batch of its partition still in
        the database.
        """
        logger.info(
            "vote worker started: batches of up to %d, waiting %d ms, %d applying thread(s)",
            self.batch_size,
            self.batch_wait_ms,
            self.apply_threads,
        )
        appliers = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"vote-apply-{n}") for n in range(self.apply_threads)
        ]
        # Records polled and not yet handed over, per partition, in order.
        pending: Pending = {}
        # The batch of each busy applying thread, and the thread each partition is busy in.
        in_flight: dict[int, _InFlight] = {}
        busy: dict[TopicPartition, int] = {}
        # Read ahead at most a batch per applying thread: enough for a free thread to find
        # a partition that is not busy, little enough to stop fetching while they are.
        read_ahead = self.batch_size * self.apply_threads
        if self.lag_monitor is not None:
            self.lag_monitor.start()
        try:
            while not self._stop.is_set():
                self._collect(in_flight, busy, block=False)
                self._dispatch(appliers, pending, in_flight, busy)
                if sum(map(len, pending.values())) < read_ahead or not in_flight:
                    # While batches are in the database, come back soon to see them done.
                    timeout = min(self.batch_wait_ms, 10) if in_flight else self.batch_wait_ms
                    polled = self.consumer.poll(timeout_ms=timeout, max_records=self.batch_size)
                    pending_add(pending, polled, assigned=self.consumer.assignment)
                    self._dispatch(appliers, pending, in_flight, busy)
                else:
                    self._collect(in_flight, busy, block=True)
                self.activity.in_flight = len(in_flight)
                self.progress.maybe_report()
        finally:
            # Whatever ended the loop: a batch still waiting out a database outage gives up,
            # and each one that committed has its offsets committed.
            self._stop.set()
            failures = []
            while in_flight:
                try:
                    self._collect(in_flight, busy, block=True)
                except Exception as exc:  # noqa: BLE001 - raised below, once every thread is done
                    failures.append(exc)
            for applier in appliers:
                # The applying thread's database connection is its own: close it there.
                applier.submit(_close_connection).result()
                applier.shutdown()
            if self.lag_monitor is not None:
                self.lag_monitor.stop()
            if failures:
                raise failures[0]
        self.offsets.commit_applied()
        logger.info("vote worker stopped")

    def _dispatch(
        self,
        appliers: list[ThreadPoolExecutor],
        pending: Pending,
        in_flight: dict[int, _InFlight],
        busy: dict[TopicPartition, int],
    ) -> None:
        """Give each free applying thread a batch of the queued partitions no other thread has.

        The applying thread decodes it too: the polling thread goes back to fetching.
        """
        for lane, applier in enumerate(appliers):
            if self._stop.is_set():
                return
            if lane in in_flight:
                continue
            records, next_offsets = pending_take(pending, busy, batch_size=self.batch_size)
            if not records:
                return
            for partition in next_offsets:
                busy[partition] = lane
            in_flight[lane] = _InFlight(applier.submit(self.consume_batch, records), next_offsets)

    def _collect(self, in_flight: dict[int, _InFlight], busy: dict[TopicPartition, int], *, block: bool) -> None:
        """Account for the batches whose transaction ended (waiting for one if `block`)."""
        if not in_flight:
            return
        if block:
            wait([batch.future for batch in in_flight.values()], return_when=FIRST_COMPLETED)
        failure: Exception | None = None
        for lane, batch in list(in_flight.items()):
            if not batch.future.done():
                continue
            del in_flight[lane]
            error = batch.future.exception()
            if error is None:
                for partition in batch.next_offsets:
                    busy.pop(partition, None)
                self._batch_done(batch.next_offsets, batch.future.result())
            # A batch that did not commit keeps its partitions busy: a later batch of theirs
            # would commit offsets past it. Stopped while it waited for the database: nothing
            # of it committed, and nothing to raise; otherwise the other finished batches
            # still count before the error is raised.
            elif not isinstance(error, WorkerStopped):
                failure = failure or error
        if failure is not None:
            raise failure

    def _batch_done(self, next_offsets: dict[TopicPartition, int], outcome: BatchOutcome) -> None:
        """After the batch's transaction committed: commit its offsets and count it."""
        # Not waited for: a synchronous commit held up the decoding of the next batch. A
        # lost one means only redelivery, and run() waits for a last commit of everything
        # applied before it returns.
        self.offsets.commit(next_offsets, wait=False)
        self.activity.last_batch_done = time.monotonic()
        self.progress.batch_done(outcome)

    def consume_batch(self, messages: Sequence[ConsumerRecord]) -> BatchOutcome:
        """Apply one batch to the database and dead-letter what cannot be applied.

        Does not commit offsets: the caller does, after this returns. Safe to call again
        with the same messages (nothing is counted twice). Waits and retries while the
        database is unreachable; raises WorkerStopped if asked to stop meanwhile.
        """
        return self.apply(self.decode(messages))

    def decode(self, messages: Sequence[ConsumerRecord]) -> DecodedBatch:
        """Decode a batch's messages into vote events, setting aside the malformed ones."""
        return batch_decode(messages)

    def apply(self, batch: DecodedBatch) -> BatchOutcome:
        """consume_batch's second half: the database transaction, then the dead letters."""
        return self.applier.apply(batch)

    def commit_offsets(self, next_offsets: dict[TopicPartition, int], *, wait: bool = True) -> None:
        """Commit each partition's offset past its last record of a batch whose transaction committed."""
        self.offsets.commit(next_offsets, wait=wait)
