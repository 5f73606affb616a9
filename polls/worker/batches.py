"""A batch of the vote topic's messages: decoded into vote events, then what applying it did."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from kafka.consumer.fetcher import ConsumerRecord

from polls.kafka.errors import MalformedVoteEvent
from polls.kafka.events import VoteEvent


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


def batch_decode(messages: Sequence[ConsumerRecord]) -> DecodedBatch:
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


@dataclass
class RetryWait:
    """The wait before a batch tries again what failed: doubling up to `max_seconds`.

    Shared by the database retries and the dead letters' (the worker's db_retry_max_wait);
    a stop requested meanwhile ends the wait.
    """

    stop: threading.Event
    max_seconds: float
