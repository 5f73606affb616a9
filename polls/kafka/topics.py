"""Topic names and Kafka client settings, in one place.

Everything is read from Django settings at call time, never at import, so tests and
commands can point the same code at another broker or topic.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaTimeoutError, TopicAlreadyExistsError

from polling.patches import kafka_rebalance, kafka_records

logger = logging.getLogger(__name__)


def vote_topic() -> str:
    return settings.KAFKA_TOPIC


def dead_letter_topic() -> str:
    return f"{settings.KAFKA_TOPIC}.dlq"


def producer_config(*, timeout: float) -> dict[str, Any]:
    """Settings of the vote producer: a vote is accepted only once it is durable.

    acks="all" waits for every in-sync replica; idempotence stops the producer's own
    retries from writing a vote twice. The blocking and delivery timeouts are the
    request's budget, so a vote the broker never took is given up (and answered 503)
    instead of being delivered after the client was told it failed. So is the bootstrap
    wait of the constructor (30 s by default): a web process starting, or replacing a
    failed producer, while the broker is down must answer 503 within the budget.
    """
    timeout_ms = int(timeout * 1000)
    return {
        "bootstrap_servers": settings.KAFKA_BROKERS,
        "client_id": "polling-web",
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": settings.KAFKA_LINGER_MS,
        "max_block_ms": timeout_ms,
        "bootstrap_timeout_ms": timeout_ms,
        "request_timeout_ms": timeout_ms,
        "delivery_timeout_ms": timeout_ms + settings.KAFKA_LINGER_MS,
        "retry_backoff_ms": 100,
        "reconnect_backoff_max_ms": 1000,
        "allow_auto_create_topics": False,
    }


def dead_letter_producer_config() -> dict[str, Any]:
    return {
        "bootstrap_servers": settings.KAFKA_BROKERS,
        "client_id": "polling-worker-dlq",
        "acks": "all",
        # Not idempotent: kafka-python 3.0.12 never recovers an idempotent producer whose
        # batches expired while the broker was down (see polls.kafka.bus), and this one is not
        # replaced, so the worker's flush would hang. A dead letter written twice is
        # harmless: replaying it counts the vote once (its vote_id).
        "enable_idempotence": False,
        "allow_auto_create_topics": False,
    }


def consumer_config(*, group_id: str, max_records: int) -> dict[str, Any]:
    """Settings of the vote worker's consumer: offsets are committed by hand, after the DB."""
    return {
        "bootstrap_servers": settings.KAFKA_BROKERS,
        "client_id": "polling-worker",
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": max_records,
        "fetch_max_wait_ms": settings.VOTE_FETCH_MAX_WAIT_MS,
        "fetch_min_bytes": settings.VOTE_FETCH_MIN_BYTES,
        # How stale the consumer's view of the topic's partitions may get. kafka-python's
        # 5 minutes kept a worker whose group formed on metadata without the partitions
        # (a worker started as the topic was created) idle that long, and partitions added
        # to the topic unread; a change seen at a refresh makes the group rebalance.
        "metadata_max_age_ms": 5_000,
        # A batch that waits on a restarting database must not cost the worker its
        # partitions; the worker retries for at most this long before giving up.
        "max_poll_interval_ms": 300_000,
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 3_000,
        "reconnect_backoff_max_ms": 1000,
        "allow_auto_create_topics": False,
    }


def vote_consumer(*, group_id: str, max_records: int) -> KafkaConsumer:
    """The vote worker's consumer, with polling.patches.kafka_rebalance applied, reading its fetched
    records with polling.patches.kafka_records unless WORKER_LEAN_RECORDS is off."""
    consumer = KafkaConsumer(**consumer_config(group_id=group_id, max_records=max_records))
    kafka_rebalance.finish_started_rebalances(consumer)
    if settings.WORKER_LEAN_RECORDS:
        kafka_records.install(consumer)
    return consumer


def replication_factor(*, brokers: int) -> int:
    """KAFKA_REPLICATION_FACTOR, or when it is 0 (the default) min(3, brokers running now)."""
    return settings.KAFKA_REPLICATION_FACTOR or min(3, max(1, brokers))


def min_insync_replicas(factor: int) -> int:
    """2 from three replicas on: an acknowledged vote is on two brokers, and one broker
    may die without stopping the votes; below three, one (each replica is needed)."""
    return 2 if factor >= 3 else 1


def ensure_topics() -> None:
    """Create the vote topic and its dead-letter topic when missing (idempotent)."""
    admin = KafkaAdminClient(bootstrap_servers=settings.KAFKA_BROKERS, client_id="polling-admin")
    try:
        existing = set(admin.list_topics())
        missing = [name for name in (vote_topic(), dead_letter_topic()) if name not in existing]
        factor = replication_factor(brokers=len(admin.describe_cluster()["brokers"])) if missing else 0
        wanted = [
            NewTopic(
                name=name,
                num_partitions=settings.KAFKA_TOPIC_PARTITIONS,
                replication_factor=factor,
                topic_configs={"min.insync.replicas": str(min_insync_replicas(factor))},
            )
            for name in missing
        ]
        if wanted:
            try:
                admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass  # another process created it between our list and create
            logger.info("created Kafka topics %s", ", ".join(topic.name for topic in wanted))
            _wait_for_leaders(admin, [topic.name for topic in wanted])
    finally:
        admin.close()


def _wait_for_leaders(admin: KafkaAdminClient, names: list[str], timeout: float = 30.0) -> None:
    """Return once every partition of these new topics has a leader in the broker's metadata.

    A consumer that joins its group while a new topic has no partitions in the metadata
    yet is assigned nothing, and kafka-python looks again only after metadata_max_age_ms
    (5 minutes): a worker started right after the topics were created sat idle (seen as
    a test that waited 30 s for a dead letter).
    """
    deadline = time.monotonic() + timeout
    while True:
        topics = admin.describe_topics(names)
        if len(topics) == len(names) and all(
            topic["error_code"] == 0
            and topic["partitions"]
            and all(partition["leader_id"] >= 0 for partition in topic["partitions"])
            for topic in topics
        ):
            return
        if time.monotonic() > deadline:
            raise KafkaTimeoutError(f"the new topics {names} have no partition leaders after {timeout:.0f} s")
        time.sleep(0.1)
