"""Reading Kafka for the tests and the bench: every message of a topic, a group's progress,
and a vote worker in this process on real Kafka clients."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from testsupport.processes import wait_until


def read_topic(topic: str, *, timeout_ms: int = 3000, brokers: Sequence[str] | str | None = None) -> list:
    """Every message in a topic, read from the beginning by a throwaway consumer.

    `brokers` defaults to the Django settings' KAFKA_BROKERS.
    """
    from django.conf import settings
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings.KAFKA_BROKERS if brokers is None else brokers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=timeout_ms,
    )
    try:
        # A topic made a moment ago may be missing from this client's first metadata.
        wait_until(lambda: topic in consumer.topics(), timeout=15, what=f"topic {topic} in metadata")
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        end = consumer.end_offsets(partitions)
        if not any(end.values()):
            return []
        return list(consumer)
    finally:
        consumer.close()


@dataclass(frozen=True)
class TopicEvent:
    partition: int
    offset: int
    vote_id: str | None
    poll_id: int | None
    option: int | None
    voter_key: str | None


def topic_events(*, brokers: Sequence[str] | str, topic: str, timeout: float = 60) -> list[TopicEvent]:
    """Every message of the topic, read from the beginning to the end offsets of now."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=brokers, enable_auto_commit=False, group_id=None, client_id="fault-test-reader"
    )
    try:
        deadline = time.monotonic() + timeout
        while not consumer.partitions_for_topic(topic):
            if time.monotonic() > deadline:
                raise AssertionError(f"topic {topic} not in the broker's metadata")
            time.sleep(0.2)
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        end = consumer.end_offsets(partitions)
        events: list[TopicEvent] = []
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise AssertionError(f"reading {topic} took over {timeout:.0f} s")
            for records in consumer.poll(timeout_ms=500, max_records=5000).values():
                for record in records:
                    events.append(_decode(record))
        return events
    finally:
        consumer.close()


def _decode(record) -> TopicEvent:
    try:
        data = json.loads(record.value)
        option = data.get("option")
        if option is None and data.get("options"):
            option = data["options"][0]
        return TopicEvent(
            record.partition,
            record.offset,
            str(data["vote_id"]),
            int(data["poll_id"]),
            int(option),
            str(data["voter_key"]),
        )
    except (ValueError, TypeError, KeyError):
        return TopicEvent(record.partition, record.offset, None, None, None, None)


def group_lag(*, brokers: Sequence[str] | str, topic: str, group: str) -> tuple[int, int]:
    """(sum of the group's committed offsets, sum of the topic's end offsets) right now.

    Read by a consumer that names the group but never subscribes: it fetches the
    committed offsets from the coordinator without joining (or disturbing) the group.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=brokers, group_id=group, enable_auto_commit=False, client_id="fault-test-offsets"
    )
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            raise AssertionError(f"topic {topic} not in the broker's metadata")
        end = consumer.end_offsets(partitions)
        done = sum(consumer.committed(tp) or 0 for tp in partitions)
        return done, sum(end.values())
    finally:
        consumer.close(autocommit=False)


def make_vote_worker(*, group: str, batch_size: int = 500, **options):
    """A VoteWorker in this process, on real Kafka clients, subscribed to the settings' topic."""
    from django.conf import settings
    from kafka import KafkaProducer

    from polls.kafka.topics import dead_letter_producer_config, vote_consumer
    from polls.worker.loop import VoteWorker

    consumer = vote_consumer(group_id=group, max_records=batch_size)
    producer = KafkaProducer(**dead_letter_producer_config())
    worker = VoteWorker(
        consumer=consumer, dead_letter_producer=producer, batch_size=batch_size, batch_wait_ms=50, **options
    )
    worker.subscribe([settings.KAFKA_TOPIC])
    return worker
