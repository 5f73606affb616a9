"""The fixes in polling.patches.kafka_rebalance, each against a real broker.

A rebalance that the topic's partitions start, polled with a timeout shorter than the
join's round trips, must still end with the consumer fetching its new partitions. Without
the fix kafka-python 3.0.12 never finishes it (a worker that owns every partition and
applies nothing); the second test pins that, so an upgrade that fixes it upstream says
the patch can go.
"""

from __future__ import annotations

import time

from django.conf import settings
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewPartitions

from polling.patches import kafka_rebalance
from polls.kafka.topics import consumer_config, vote_consumer
from testsupport.processes import wait_until


def join(consumer: KafkaConsumer, topic: str) -> None:
    consumer.subscribe([topic])

    def assigned_all() -> bool:
        consumer.poll(timeout_ms=200)
        return len(consumer.assignment()) == settings.KAFKA_TOPIC_PARTITIONS

    wait_until(assigned_all, timeout=30, what="the topic's partitions")


def record_reaches_a_consumer_polled_briefly(consumer: KafkaConsumer, topic: str, *, within: float) -> bool:
    """Grow the topic by two partitions, send a record to the last one, and poll with a
    zero timeout (never long enough for the group's join and sync): is it consumed?"""
    partitions = settings.KAFKA_TOPIC_PARTITIONS
    admin = KafkaAdminClient(bootstrap_servers=settings.KAFKA_BROKERS)
    try:
        admin.create_partitions({topic: NewPartitions(total_count=partitions + 2)})
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=settings.KAFKA_BROKERS, acks="all")
    try:
        producer.send(topic, value=b"after the rebalance", partition=partitions + 1).get(timeout=30)
    finally:
        producer.close()
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for partition, records in consumer.poll(timeout_ms=0).items():
            if partition == TopicPartition(topic, partitions + 1) and records:
                return True
        time.sleep(0.005)
    return False


def test_a_rebalance_longer_than_the_polls_timeout_still_ends_in_fetching(kafka_topic):
    consumer = vote_consumer(group_id=f"workers-{kafka_topic}", max_records=10)
    try:
        join(consumer, kafka_topic)
        assert record_reaches_a_consumer_polled_briefly(consumer, kafka_topic, within=30)
        assert not consumer._coordinator.rebalance_in_progress()
    finally:
        consumer.close(autocommit=False)


def test_kafka_python_still_needs_the_fix(kafka_topic):
    """What the patch relies on, and the defect it works around, in the pinned kafka-python."""
    consumer = KafkaConsumer(**consumer_config(group_id=f"workers-{kafka_topic}", max_records=10))
    try:
        coordinator = consumer._coordinator
        assert coordinator.rejoining is False and callable(coordinator.need_rejoin)
        # The first join can hang the same way (the group may form before the new topic's
        # metadata arrives): made with the fix, which is then taken off again.
        kafka_rebalance.finish_started_rebalances(consumer)
        join(consumer, kafka_topic)
        del coordinator.need_rejoin
        # Metadata refreshes every 5 s; the unpatched consumer never takes the partition.
        assert not record_reaches_a_consumer_polled_briefly(consumer, kafka_topic, within=15)
        assert coordinator.rebalance_in_progress() and not coordinator.need_rejoin()
        # The fix, applied now, lets the next poll finish the rebalance that was left hanging.
        kafka_rebalance.finish_started_rebalances(consumer)
        assert coordinator.need_rejoin()

        def fetched_again() -> bool:
            consumer.poll(timeout_ms=200)
            return (
                not coordinator.rebalance_in_progress()
                and len(consumer.assignment()) == settings.KAFKA_TOPIC_PARTITIONS + 2
            )

        wait_until(fetched_again, timeout=30, what="the hanging rebalance to finish")
    finally:
        consumer.close(autocommit=False)
