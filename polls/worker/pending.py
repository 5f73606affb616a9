"""The records polled and not yet handed to an applying thread, queued per partition in order.

A partition is in at most one applying thread's batch at a time (`busy`), so its batches
reach the database one after the other, in offset order.
"""

from __future__ import annotations

from collections.abc import Callable

from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

Pending = dict[TopicPartition, list[ConsumerRecord]]


def pending_add(pending: Pending, polled: Pending, *, assigned: Callable[[], set[TopicPartition] | None]) -> None:
    """Queue what a poll returned per partition, dropping what a rebalance made stale.

    `assigned` is the consumer's assignment(), asked only when something is queued.
    """
    if pending:
        held = assigned() or set()
        for partition in [p for p in pending if p not in held]:
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


def pending_take(
    pending: Pending, busy: dict[TopicPartition, int], *, batch_size: int
) -> tuple[list[ConsumerRecord], dict[TopicPartition, int]]:
    """Up to a batch of queued records, each partition's in order, of partitions not busy,
    and the offset past the last record taken of each of those partitions."""
    records: list[ConsumerRecord] = []
    next_offsets: dict[TopicPartition, int] = {}
    for partition in list(pending):  # the longest-waiting partitions first
        if partition in busy:
            continue
        queue = pending[partition]
        room = batch_size - len(records)
        taken = queue[:room]
        records += taken
        next_offsets[partition] = taken[-1].offset + 1
        if len(queue) > room:
            pending[partition] = queue[room:]
        else:
            del pending[partition]
        if len(records) >= batch_size:
            break
    return records, next_offsets
