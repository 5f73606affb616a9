"""The vote bus: where an accepted vote goes.

With KAFKA_BROKERS set, votes are published to Kafka and applied by the worker
(`manage.py consume_votes`). Without it (the embedded default), votes are applied
in process by the very same batch code, one vote per batch.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from django.conf import settings
from kafka import KafkaProducer
from kafka.errors import KafkaError

from polling.metrics import vote_published
from polls.events import VoteEvent
from polls.exceptions import VoteBusUnavailable
from polls.topics import producer_config, vote_topic

logger = logging.getLogger(__name__)


class VoteBus(Protocol):
    def publish(self, event: VoteEvent) -> None:
        """Return once the vote is durable; raise VoteBusUnavailable otherwise."""


class KafkaVoteBus:
    # After a failed connection, votes are refused at once for this long instead of each
    # spending its budget on another attempt.
    RECONNECT_BACKOFF = 1.0

    def __init__(self, *, timeout: float) -> None:
        self._timeout = timeout
        self._producer = None
        self._lock = threading.Lock()
        self._unreachable: str | None = None
        self._unreachable_until = 0.0

    def _get_producer(self):
        # Built on first use, not at start: a web process must come up (and answer 503)
        # while the broker is down, and connect once it is back. One request connects at
        # a time; the others wait for it within their own budget, and while the broker
        # is known to be unreachable they are refused at once. Before this, with the
        # broker down, every vote queued behind one 30 s connection attempt after another
        # and clients timed out instead of hearing 503 (found by tests/faults).
        producer = self._producer
        if producer is not None:
            # Every vote comes here: once built, the producer is read without the lock,
            # which 64 request threads would otherwise take in turn.
            return producer
        if not self._lock.acquire(timeout=self._timeout):
            raise VoteBusUnavailable("timed out waiting for the connection to Kafka")
        try:
            if self._producer is None:
                if time.monotonic() < self._unreachable_until:
                    raise VoteBusUnavailable(f"cannot connect to Kafka: {self._unreachable}")
                try:
                    self._producer = KafkaProducer(**producer_config(timeout=self._timeout))
                except KafkaError as exc:
                    self._unreachable = str(exc) or type(exc).__name__
                    self._unreachable_until = time.monotonic() + self.RECONNECT_BACKOFF
                    raise VoteBusUnavailable(f"cannot connect to Kafka: {self._unreachable}") from exc
            return self._producer
        finally:
            self._lock.release()

    def publish(self, event: VoteEvent) -> None:
        started = time.perf_counter()
        producer = None
        try:
            producer = self._get_producer()
            future = producer.send(vote_topic(), key=event.key, value=event.to_bytes())
            future.get(timeout=self._timeout)
        except KafkaError as exc:
            vote_published(seconds=time.perf_counter() - started, ok=False)
            logger.warning("vote %s not published: %s", event.vote_id, exc)
            self._discard(producer)
            raise VoteBusUnavailable(str(exc)) from exc
        except VoteBusUnavailable:  # no producer: the broker was unreachable
            vote_published(seconds=time.perf_counter() - started, ok=False)
            raise
        vote_published(seconds=time.perf_counter() - started, ok=True)

    def _discard(self, producer: KafkaProducer | None) -> None:
        """Replace a producer that failed a vote with a fresh one at the next vote.

        After a broker is killed with votes in flight, kafka-python's idempotent producer
        never delivers on those partitions again (its sequence state is not reset): every
        later vote timed out, 80 s after the broker was back (measured). A new producer
        gets a new producer id and works at once. The old one is force-closed, which also
        drops records that were answered 503.
        """
        with self._lock:
            if producer is None or self._producer is not producer:
                return  # already replaced by a request that failed at the same time
            self._producer = None
        threading.Thread(target=producer.close, kwargs={"timeout": 0}, daemon=True, name="producer-close").start()

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=self._timeout)
                self._producer = None


class InProcessVoteBus:
    """Applies each vote at once with the worker's batch code: for trying the project."""

    def publish(self, event: VoteEvent) -> None:
        # Imported here: polls.services imports this module to publish.
        from polls.services import votes_apply

        started = time.perf_counter()
        votes_apply(events=[event])
        vote_published(seconds=time.perf_counter() - started, ok=True)


_bus: VoteBus | None = None
_bus_lock = threading.Lock()


def get_vote_bus() -> VoteBus:
    global _bus
    with _bus_lock:
        if _bus is None:
            if settings.KAFKA_BROKERS:
                _bus = KafkaVoteBus(timeout=settings.VOTE_PUBLISH_TIMEOUT)
            else:
                _bus = InProcessVoteBus()
        return _bus


def reset_vote_bus() -> None:
    """Drop the process's bus so the next vote builds one from the current settings."""
    global _bus
    with _bus_lock:
        if isinstance(_bus, KafkaVoteBus):
            _bus.close()
        _bus = None
