"""The worker's Kafka offsets: committed per partition only past batches the database committed.

A crash before the offset commit means redelivery, and redelivered votes collide on
their vote_id. A rebalance that takes a partition away also takes away what the worker
remembered of it.
"""

from __future__ import annotations

import logging

from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError

from polling import metrics

logger = logging.getLogger(__name__)


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
    return (
        ", ".join(f"{topic}[{','.join(map(str, sorted(numbers)))}]" for topic, numbers in sorted(by_topic.items()))
        or "none"
    )


class OffsetCommits:
    """Commits each partition's offset past what is in the database, for the partitions still held."""

    def __init__(self, consumer: KafkaConsumer) -> None:
        self.consumer = consumer
        # Next offset per partition of what is in the database (the offsets to commit), for
        # the partitions this worker holds: a rebalance that takes one away forgets it.
        self._applied: dict[TopicPartition, int] = {}
        self.rebalance_listener = _ForgetRevoked(self._applied)

    def commit(self, next_offsets: dict[TopicPartition, int], *, wait: bool = True) -> None:
        """Commit each partition's offset past its last record of a batch whose transaction committed.

        The batches know those offsets from when they were taken, which spares a pass over
        their records. With wait=False the commit is sent and not waited for (the worker's
        loop goes on decoding meanwhile); a failure is logged when the reply arrives.
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

    def commit_applied(self) -> None:
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
