"""Fixes to kafka-python's consumer, in one place, applied to each consumer the worker builds.

kafka-python is pinned (requirements.txt); `polling/patches/tests/test_kafka_rebalance.py` reproduces
each defect against a real broker and checks what each fix relies on, so an upgrade that
moves it fails there.
"""

from __future__ import annotations

from kafka import KafkaConsumer


def finish_started_rebalances(consumer: KafkaConsumer) -> None:
    """Keep a consumer rejoining its group until a rebalance it started has completed.

    In kafka-python 3.0.12 a rebalance runs as a task on the client's IO thread, and only
    the `poll()` that waits for it applies its outcome: the new assignment, the member's
    state, its heartbeats. A rebalance started because the topic's partitions changed
    (a new topic, partitions added) stops counting as needed as soon as the leader has
    computed the new assignment; if `poll()`'s timeout ends before the assignment comes
    back, no later `poll()` waits for it. The consumer then stays "rebalancing" for good:
    its partitions are revoked and never fetched, no heartbeat is sent, and the broker
    drops it from the group, with nothing logged. Java's client treats a join in flight
    as a reason to rejoin (`rejoinNeededOrPending`); so does this.
    """
    coordinator = consumer._coordinator
    need_rejoin = coordinator.need_rejoin

    def need_rejoin_or_pending() -> bool:
        # `rejoining` is set when a rebalance starts and cleared once its outcome is applied.
        return coordinator.rejoining or need_rejoin()

    coordinator.need_rejoin = need_rejoin_or_pending
