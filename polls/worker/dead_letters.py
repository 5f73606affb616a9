"""The dead-letter topic: written by the worker, read and replayed by `manage.py dead_letters`."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from django.conf import settings
from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata

from polling import metrics
from polls.kafka.topics import dead_letter_topic, vote_topic
from polls.worker.batches import RetryWait, WorkerStopped

logger = logging.getLogger(__name__)

REPLAY_GROUP_SUFFIX = "-dlq-replay"


class DeadLetterWriter:
    """Writes the messages a batch cannot apply to the dead-letter topic, durably."""

    def __init__(self, *, producer: KafkaProducer, retry: RetryWait) -> None:
        self.producer = producer
        self.retry = retry

    def write_all(self, poison: list[tuple[ConsumerRecord, str]]) -> None:
        """Write the dead letters and wait until the broker has every one, retrying the rest.

        They must be durable before the offsets that skip them are committed, or the
        message would be in neither the database nor the dead-letter topic. The producer's
        flush() only logs a failed write, so each send's own result is read; a write the
        broker refused (its partition's leader down past the delivery timeout, a message
        over the topic's size limit) is sent again, the wait doubling up to
        the retry's max_seconds, until it is taken or the worker is asked to stop
        (WorkerStopped: the batch's offsets stay uncommitted and it is redelivered; its
        votes are skipped as duplicates then).
        """
        for record, reason in poison:
            logger.error("dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, reason)
        delay = 0.1
        while True:
            sent = []
            for record, reason in poison:
                try:
                    sent.append((record, reason, self._send(record, reason)))
                except KafkaError as exc:  # refused before it was queued (no metadata in time, too large)
                    sent.append((record, reason, exc))
            self.producer.flush()
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
                len(failed),
                len(poison),
                record.topic,
                record.partition,
                record.offset,
                error,
                delay,
            )
            if self.retry.stop.wait(delay):
                raise WorkerStopped("stopped while dead letters could not be written")
            delay = min(delay * 2, self.retry.max_seconds)
            poison = [(record, reason) for record, reason, _ in failed]

    def _send(self, record: ConsumerRecord, reason: str) -> FutureRecordMetadata:
        return self.producer.send(
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


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]

    @property
    def reason(self) -> str:
        return self.headers.get("dlq.reason", "")


def dead_letters_read(
    *, group: str | None = None, limit: int | None = None, timeout_ms: int = 2000
) -> Iterator[tuple[KafkaConsumer, DeadLetter]]:
    """Dead letters from the start (no group) or from the group's committed position."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.KAFKA_BROKERS,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=timeout_ms,
        client_id="polling-dlq-tool",
    )
    try:
        consumer.subscribe([dead_letter_topic()])
        for count, record in enumerate(consumer, start=1):
            headers = {name: value.decode(errors="replace") for name, value in record.headers or ()}
            yield consumer, DeadLetter(record.partition, record.offset, record.key, record.value or b"", headers)
            if limit is not None and count >= limit:
                break
    finally:
        consumer.close(autocommit=False)


def dead_letters_replay(*, limit: int | None = None) -> int:
    """Send dead letters back to the vote topic, each once (a consumer group remembers).

    Use it after fixing what made them fail (a poll restored, a bug fixed). Replaying is
    safe: a vote already counted collides on its vote_id; one that fails again comes
    back to the dead-letter topic.
    """
    # Not idempotent, for the reason given in polls.kafka.topics.dead_letter_producer_config.
    producer = KafkaProducer(bootstrap_servers=settings.KAFKA_BROKERS, acks="all", enable_idempotence=False)
    replayed = 0
    try:
        for consumer, letter in dead_letters_read(
            group=settings.KAFKA_CONSUMER_GROUP + REPLAY_GROUP_SUFFIX, limit=limit
        ):
            producer.send(vote_topic(), key=letter.key, value=letter.value).get(timeout=30)
            consumer.commit(
                {TopicPartition(dead_letter_topic(), letter.partition): OffsetAndMetadata(letter.offset + 1, "", -1)}
            )
            replayed += 1
    finally:
        producer.close(timeout=10)
    return replayed
