"""The vote worker: reads vote events from Kafka and applies them in batches.

At-least-once delivery plus idempotent application gives exactly-once counting:

    poll a batch ─► decode (poison → dead-letter topic) ─► votes_apply in one DB
    transaction ─► DB commit ─► commit Kafka offsets

The next batch is polled and decoded while the previous one is in the database.

Offsets are committed only after the database committed, so a crash anywhere before
the offset commit means redelivery, and redelivered votes collide on their vote_id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from django.db import DEFAULT_DB_ALIAS, DatabaseError, InterfaceError, OperationalError, connection, connections
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata

from polling import metrics
from polls.kafka.errors import MalformedVoteEvent
from polls.kafka.events import VoteEvent
from polls.worker.lag import Activity, LagMonitor
from polls.domain.services import AppliedBatch, votes_apply
from polls.kafka.topics import dead_letter_topic

logger = logging.getLogger(__name__)


def _close_connection() -> None:
    # `connection` is per thread: looked up here, in the thread that runs this.
    connection.close()


class WorkerStopped(Exception):
    """Raised inside a batch when a stop was requested while it waited; nothing was committed."""


@dataclass
class BatchOutcome:
    messages: int
    applied: int
    duplicates: int
    dead_lettered: int


@dataclass
class DecodedBatch:
    """A batch's messages decoded, before it is applied."""

    messages: int
    events: list[VoteEvent] = field(default_factory=list)
    # Messages that are not valid vote events, with why: they go to the dead-letter topic.
    poison: list[tuple[ConsumerRecord, str]] = field(default_factory=list)
    # The message of each event, in the same order as `events`.
    records: list[ConsumerRecord] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class _InFlight:
    """A batch handed to an applying thread, with the offset past its last record of each partition."""

    future: Future[BatchOutcome]
    next_offsets: dict[TopicPartition, int]


@dataclass
class Progress:
    """What the worker did since it started (or since the last progress line)."""

    batches: int = 0
    messages: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0

    def add(self, outcome: BatchOutcome) -> None:
        self.batches += 1
        self.messages += outcome.messages
        self.applied += outcome.applied
        self.duplicates += outcome.duplicates
        self.dead_lettered += outcome.dead_lettered


class _ForgetRevoked(ConsumerRebalanceListener):
    """Forgets what the worker applied of the partitions a rebalance takes away.

    Their new owner commits its own offsets past ours; were a partition given back to
    this worker later, a commit of what it remembered (on the way out, say) would move
    the group's offset back over everything the other worker applied: all of it
    redelivered, and its dead letters written again. Called in the polling thread,
    inside poll(), like every other use of the offsets it forgets.
    """

    def __init__(self, applied: dict[TopicPartition, int]) -> None:
        self._applied = applied

    def on_partitions_revoked(self, revoked) -> None:
        for partition in revoked:
            self._applied.pop(partition, None)

    def on_partitions_assigned(self, assigned) -> None:
        # Each rebalance's outcome, for operators; the end-to-end tests wait for it.
        logger.info("partitions assigned: %s", describe_partitions(assigned))


def describe_partitions(partitions) -> str:
    """`polls[0,1,2], polls.dlq[0]`, or `none`."""
    by_topic: dict[str, list[int]] = {}
    for partition in partitions:
        by_topic.setdefault(partition.topic, []).append(partition.partition)
    return ", ".join(f"{topic}[{','.join(map(str, sorted(numbers)))}]" for topic, numbers in sorted(by_topic.items())) or "none"


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
        self.db_retry_max_wait = db_retry_max_wait
        self.progress_interval = progress_interval
        # SQLite has one writer at a time: a second transaction would only wait for it.
        sqlite = connections[DEFAULT_DB_ALIAS].vendor == "sqlite"
        self.apply_threads = 1 if sqlite else max(1, apply_threads)
        self._stop = stop_event or threading.Event()
        self.total = Progress()
        self._since_report = Progress()
        self._last_report = time.monotonic()
        # Lag from the broker and the stall watchdog, in a thread of their own while run()
        # runs; a consumer that is no KafkaConsumer (a test's script) has no broker to ask.
        self.activity = Activity()
        self.lag_monitor = LagMonitor(
            bootstrap_servers=consumer.config["bootstrap_servers"],
            group_id=consumer.config["group_id"],
            partitions=lambda: self.consumer.assignment() or set(),
            activity=self.activity,
            stall_timeout=stall_timeout,
            on_stall=on_stall,
        ) if isinstance(consumer, KafkaConsumer) else None
        # Next offset per partition of what is in the database (the offsets to commit), for
        # the partitions this worker holds: a rebalance that takes one away forgets it.
        self._applied: dict[TopicPartition, int] = {}
        self.rebalance_listener = _ForgetRevoked(self._applied)

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
        logger.info("vote worker started: batches of up to %d, waiting %d ms, %d applying thread(s)",
                    self.batch_size, self.batch_wait_ms, self.apply_threads)
        appliers = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"vote-apply-{n}") for n in range(self.apply_threads)
        ]
        # Records polled and not yet handed over, per partition, in order.
        pending: dict[TopicPartition, list[ConsumerRecord]] = {}
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
                    self._buffer(polled, pending)
                    self._dispatch(appliers, pending, in_flight, busy)
                else:
                    self._collect(in_flight, busy, block=True)
                self.activity.in_flight = len(in_flight)
                self._maybe_report_progress()
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
        self._commit_applied()
        logger.info("vote worker stopped")

    def _buffer(self, polled: dict[TopicPartition, list[ConsumerRecord]], pending: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Queue what a poll returned per partition, dropping what a rebalance made stale."""
        if pending:
            assigned = self.consumer.assignment() or set()
            for partition in [p for p in pending if p not in assigned]:
                # Revoked: its new owner reads it again from the last committed offset.
                del pending[partition]
        for partition, records in polled.items():
            if not records:
                continue
            queue = pending.get(partition)
            if queue and records[0].offset > queue[-1].offset:
                queue.extend(records)
            else:
                # Nothing queued, or the partition was given back to us and its position
                # reset to the last committed offset (a rebalance): what is queued comes
                # again in this poll, so it is replaced.
                pending[partition] = list(records)

    def _dispatch(
        self,
        appliers: list[ThreadPoolExecutor],
        pending: dict[TopicPartition, list[ConsumerRecord]],
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
            records, next_offsets = self._take(pending, busy)
            if not records:
                return
            for partition in next_offsets:
                busy[partition] = lane
            in_flight[lane] = _InFlight(applier.submit(self.consume_batch, records), next_offsets)

    def _take(
        self, pending: dict[TopicPartition, list[ConsumerRecord]], busy: dict[TopicPartition, int]
    ) -> tuple[list[ConsumerRecord], dict[TopicPartition, int]]:
        """Up to a batch of queued records, each partition's in order, of partitions not busy,
        and the offset past the last record taken of each of those partitions."""
        records: list[ConsumerRecord] = []
        next_offsets: dict[TopicPartition, int] = {}
        for partition in list(pending):  # the longest-waiting partitions first
            if partition in busy:
                continue
            queue = pending[partition]
            room = self.batch_size - len(records)
            taken = queue[:room]
            records += taken
            next_offsets[partition] = taken[-1].offset + 1
            if len(queue) > room:
                pending[partition] = queue[room:]
            else:
                del pending[partition]
            if len(records) >= self.batch_size:
                break
        return records, next_offsets

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
        # Not waited for: a synchronous commit held up the decoding of the next batch
        # (a tenth of this thread's samples). A lost one means only redelivery, and
        # run() waits for a last commit of everything applied before it returns.
        self.commit_offsets(next_offsets, wait=False)
        self.total.add(outcome)
        self._since_report.add(outcome)
        self.activity.last_batch_done = time.monotonic()
        logger.info(
            "batch of %d: %d applied, %d duplicates, %d dead-lettered",
            outcome.messages,
            outcome.applied,
            outcome.duplicates,
            outcome.dead_lettered,
        )

    def _maybe_report_progress(self) -> None:
        if self.progress_interval <= 0:
            return
        now = time.monotonic()
        elapsed = now - self._last_report
        if elapsed < self.progress_interval:
            return
        done = self._since_report
        lags = self.lag_monitor.lags if self.lag_monitor is not None else {}
        lag = sum(lags.values())
        logger.info(
            "progress: %d votes applied, %d duplicates, %d dead-lettered in %d batches over the last %.0f s "
            "(%.1f votes/s); %d applied since start; lag %d on %d partitions",
            done.applied, done.duplicates, done.dead_lettered, done.batches, elapsed,
            done.applied / elapsed, self.total.applied, lag, len(lags),
            extra={"progress": {
                "interval_s": round(elapsed, 1),
                "batches": done.batches,
                "votes_applied": done.applied,
                "duplicates": done.duplicates,
                "dead_lettered": done.dead_lettered,
                "votes_applied_total": self.total.applied,
                "batches_total": self.total.batches,
                "lag": lag,
                "lag_by_partition": {f"{topic}[{partition}]": n for (topic, partition), n in sorted(lags.items())},
            }},
        )
        self._since_report = Progress()
        self._last_report = now

    def consume_batch(self, messages: Sequence[ConsumerRecord]) -> BatchOutcome:
        """Apply one batch to the database and dead-letter what cannot be applied.

        Does not commit offsets: the caller does, after this returns. Safe to call again
        with the same messages (nothing is counted twice). Waits and retries while the
        database is unreachable; raises WorkerStopped if asked to stop meanwhile.
        """
        return self.apply(self.decode(messages))

    def decode(self, messages: Sequence[ConsumerRecord]) -> DecodedBatch:
        """Decode a batch's messages into vote events, setting aside the malformed ones."""
        started = time.perf_counter()
        batch = DecodedBatch(messages=len(messages))
        for record in messages:
            try:
                event = VoteEvent.from_bytes(record.value)
            except MalformedVoteEvent as exc:
                batch.poison.append((record, str(exc)))
                continue
            batch.events.append(event)
            batch.records.append(record)
        batch.seconds = time.perf_counter() - started
        return batch

    def apply(self, batch: DecodedBatch) -> BatchOutcome:
        """consume_batch's second half: the database transaction, then the dead letters."""
        started = time.perf_counter()
        result = self._apply_with_retry(batch.events) if batch.events else AppliedBatch()
        poison = batch.poison
        if result.rejected:
            # Built only now: a map per vote would cost every batch a hash of each vote id.
            record_of = {id(event): record for event, record in zip(batch.events, batch.records)}
            poison = poison + [(record_of[id(event)], reason) for event, reason in result.rejected]
        if poison:
            self._dead_letter_all(poison)
        outcome = BatchOutcome(
            messages=batch.messages,
            applied=result.applied,
            duplicates=result.duplicates,
            dead_lettered=len(poison),
        )
        metrics.worker_batch_done(
            messages=outcome.messages,
            applied=outcome.applied,
            duplicates=outcome.duplicates,
            dead_lettered=outcome.dead_lettered,
            seconds=batch.seconds + time.perf_counter() - started,
        )
        return outcome

    def commit_offsets(self, next_offsets: dict[TopicPartition, int], *, wait: bool = True) -> None:
        """Commit each partition's offset past its last record of a batch whose transaction committed.

        The batches know those offsets from when they were taken, which spares a pass over
        their records (at 22,000 votes/s that pass was 30 of the polling thread's 338 GIL
        samples). With wait=False the commit is sent and not waited for (the loop in run()
        goes on decoding meanwhile); a failure is logged when the reply arrives.
        """
        # Not for a partition a rebalance gave to another worker: it reads on from its own
        # commits (ours could only move its offset back), and it is not remembered either,
        # should the partition come back later.
        assigned = self.consumer.assignment() or set()
        next_offsets = {p: max(o, self._applied.get(p, 0)) for p, o in next_offsets.items() if p in assigned}
        self._applied.update(next_offsets)
        offsets = {p: OffsetAndMetadata(o, "", -1) for p, o in next_offsets.items()}
        if not offsets:
            return
        if not wait:
            self.consumer.commit_async(offsets, callback=self._async_commit_done)
            return
        try:
            self.consumer.commit(offsets)
        except KafkaError as exc:
            self._commit_failed(exc)

    def _commit_applied(self) -> None:
        """On the way out: wait for a commit of everything applied, on the partitions still ours.

        Covers async commits still in flight or lost; a partition revoked meanwhile is
        left to its new owner (committing ours could only move its offset back).
        """
        assigned = self.consumer.assignment() or set()
        offsets = {p: OffsetAndMetadata(o, "", -1) for p, o in self._applied.items() if p in assigned}
        if not offsets:
            return
        try:
            self.consumer.commit(offsets)
        except KafkaError as exc:
            self._commit_failed(exc)

    def _async_commit_done(self, offsets: object, response: object) -> None:
        if isinstance(response, Exception):
            self._commit_failed(response)

    @staticmethod
    def _commit_failed(exc: Exception) -> None:
        # The batch is in the database; after a rebalance or a broker bounce it will be
        # redelivered and skipped as duplicates. Losing the commit costs only that.
        metrics.WORKER_OFFSET_COMMIT_FAILURES.inc()
        logger.warning("offset commit failed, the batch will be redelivered: %s", exc)

    def _apply_with_retry(self, events: list[VoteEvent]) -> AppliedBatch:
        try:
            return self._retry_while_unreachable(events)
        except DatabaseError as exc:
            # Not an outage but an event the database refuses: find it by applying the
            # batch one vote at a time, and dead-letter only the ones refused.
            logger.warning("batch refused by the database (%s); applying it vote by vote", exc)
            return self._apply_one_by_one(events)

    def _apply_one_by_one(self, events: list[VoteEvent]) -> AppliedBatch:
        total = AppliedBatch()
        for event in events:
            try:
                single = self._retry_while_unreachable([event])
            except DatabaseError as exc:
                total.rejected.append((event, f"refused by the database: {exc}"))
                continue
            total.applied += single.applied
            total.duplicates += single.duplicates
            total.rejected.extend(single.rejected)
            total.poll_ids |= single.poll_ids
        return total

    def _retry_while_unreachable(self, events: list[VoteEvent]) -> AppliedBatch:
        """votes_apply, waiting out an unreachable database (never skipping the batch)."""
        wait = 0.1
        while True:
            try:
                return votes_apply(events=events)
            except (OperationalError, InterfaceError) as exc:
                if self._stop.is_set():
                    raise WorkerStopped from exc
                metrics.WORKER_DATABASE_RETRIES.inc()
                logger.warning("database unavailable, retrying the batch in %.1f s: %s", wait, exc)
                # The connection is unusable after a server restart; drop it so the next
                # attempt opens a fresh one.
                connection.close()
                self._stop.wait(wait)
                wait = min(wait * 2, self.db_retry_max_wait)

    def _dead_letter_all(self, poison: list[tuple[ConsumerRecord, str]]) -> None:
        """Write the dead letters and wait until the broker has every one, retrying the rest.

        They must be durable before the offsets that skip them are committed, or the
        message would be in neither the database nor the dead-letter topic. The producer's
        flush() only logs a failed write, so each send's own result is read; a write the
        broker refused (its partition's leader down past the delivery timeout, a message
        over the topic's size limit) is sent again, the wait doubling up to
        db_retry_max_wait, until it is taken or the worker is asked to stop (WorkerStopped:
        the batch's offsets stay uncommitted and it is redelivered; its votes are skipped
        as duplicates then).
        """
        for record, reason in poison:
            logger.error(
                "dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, reason
            )
        delay = 0.1
        while True:
            sent = []
            for record, reason in poison:
                try:
                    sent.append((record, reason, self._dead_letter(record, reason)))
                except KafkaError as exc:  # refused before it was queued (no metadata in time, too large)
                    sent.append((record, reason, exc))
            self.dead_letter_producer.flush()
            failed = [
                (record, reason, result if isinstance(result, Exception) else result.exception)
                for record, reason, result in sent
                if isinstance(result, Exception) or result.failed()
            ]
            if not failed:
                return
            metrics.WORKER_DEAD_LETTER_RETRIES.inc()
            record, _, error = failed[0]
            logger.error(
                "%d of %d dead letter(s) not written (%s[%d]@%d: %r); retrying in %.1f s, offsets held",
                len(failed), len(poison), record.topic, record.partition, record.offset, error, delay,
            )
            if self._stop.wait(delay):
                raise WorkerStopped("stopped while dead letters could not be written")
            delay = min(delay * 2, self.db_retry_max_wait)
            poison = [(record, reason) for record, reason, _ in failed]

    def _dead_letter(self, record: ConsumerRecord, reason: str) -> FutureRecordMetadata:
        return self.dead_letter_producer.send(
            dead_letter_topic(),
            key=record.key,
            value=record.value if record.value is not None else b"",
            headers=[
                ("dlq.reason", reason.encode()),
                ("dlq.topic", record.topic.encode()),
                ("dlq.partition", str(record.partition).encode()),
                ("dlq.offset", str(record.offset).encode()),
                ("dlq.at", str(time.time()).encode()),
            ],
        )
