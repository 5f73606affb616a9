"""Reading and replaying the dead-letter topic."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from django.conf import settings
from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition

from polls.kafka.topics import dead_letter_topic, vote_topic

REPLAY_GROUP_SUFFIX = "-dlq-replay"


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


def dead_letters_read(*, group: str | None = None, limit: int | None = None, timeout_ms: int = 2000) -> Iterator[tuple[KafkaConsumer, DeadLetter]]:
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
        for consumer, letter in dead_letters_read(group=settings.KAFKA_CONSUMER_GROUP + REPLAY_GROUP_SUFFIX, limit=limit):
            producer.send(vote_topic(), key=letter.key, value=letter.value).get(timeout=30)
            consumer.commit({TopicPartition(dead_letter_topic(), letter.partition): OffsetAndMetadata(letter.offset + 1, "", -1)})
            replayed += 1
    finally:
        producer.close(timeout=10)
    return replayed

