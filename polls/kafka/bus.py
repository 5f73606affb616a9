"""The vote bus: where an accepted vote goes.

With KAFKA_BROKERS set, votes are published to Kafka and applied by the worker
(`manage.py consume_votes`). Without it (the embedded default), votes are applied
in process by the very same batch code, one vote per batch.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from kafka import KafkaProducer
from kafka.errors import KafkaError

from polling.metrics import vote_published
from polls.kafka.errors import VoteBusUnavailable
from polls.kafka.events import VoteEvent
from polls.kafka.topics import producer_config, vote_topic

logger = logging.getLogger(__name__)


class VoteBus(Protocol):
    def publish(self, event: VoteEvent) -> None:
        """Return once the vote is durable; raise VoteBusUnavailable otherwise."""

    async def publish_async(self, event: VoteEvent) -> None:
        """publish, awaited on the event loop without blocking it."""


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
        # (producer, topic) pairs whose partitions the producer knows: its send() then
        # returns at once instead of waiting for metadata.
        self._ready: set[tuple[int, str]] = set()

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

    async def publish_async(self, event: VoteEvent) -> None:
        """publish without a thread per waiting vote: the acknowledgement completes an
        asyncio future from the producer's I/O thread. Only a producer's first vote for a
        topic (connecting, reading the topic's partitions) waits on an executor thread."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        topic = vote_topic()
        producer = self._producer
        try:
            if producer is None or (id(producer), topic) not in self._ready:
                producer = await loop.run_in_executor(None, self._get_ready_producer, topic)
            acknowledged = loop.create_future()
            future = producer.send(topic, key=event.key, value=event.to_bytes())
            future.add_callback(_acknowledged, loop, acknowledged)
            future.add_errback(_failed, loop, acknowledged)
            await asyncio.wait_for(acknowledged, self._timeout)
        except (KafkaError, TimeoutError) as exc:
            vote_published(seconds=time.perf_counter() - started, ok=False)
            logger.warning("vote %s not published: %s", event.vote_id, exc or type(exc).__name__)
            self._discard(producer)
            raise VoteBusUnavailable(str(exc) or type(exc).__name__) from exc
        except VoteBusUnavailable:  # no producer: the broker was unreachable
            vote_published(seconds=time.perf_counter() - started, ok=False)
            raise
        vote_published(seconds=time.perf_counter() - started, ok=True)

    def _get_ready_producer(self, topic: str) -> KafkaProducer:
        producer = self._get_producer()
        producer.partitions_for(topic)  # waits for the topic's metadata (within max_block_ms)
        self._ready.add((id(producer), topic))
        return producer

    def _discard(self, producer: KafkaProducer | None) -> None:
        """Replace a producer that failed a vote with a fresh one at the next vote.

        After a broker is killed with votes in flight, kafka-python's idempotent producer
        never delivers on those partitions again (its sequence state is not reset): every
        later vote timed out, long after the broker was back. A new producer
        gets a new producer id and works at once. The old one is force-closed, which also
        drops records that were answered 503.
        """
        with self._lock:
            if producer is None or self._producer is not producer:
                return  # already replaced by a request that failed at the same time
            self._producer = None
            self._ready = {ready for ready in self._ready if ready[0] != id(producer)}
        threading.Thread(target=producer.close, kwargs={"timeout": 0}, daemon=True, name="producer-close").start()

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=self._timeout)
                self._producer = None


class InProcessVoteBus:
    """Applies each vote at once with the worker's batch code (`apply`): for trying the project."""

    def __init__(self, *, apply: Callable[..., object]) -> None:
        self._apply = apply

    def publish(self, event: VoteEvent) -> None:
        started = time.perf_counter()
        self._apply(events=[event])
        vote_published(seconds=time.perf_counter() - started, ok=True)

    async def publish_async(self, event: VoteEvent) -> None:
        # The embedded default's SQLite has one writer: votes apply on one thread in turn.
        await sync_to_async(self._publish_then_release, thread_sensitive=True)(event)

    def _publish_then_release(self, event: VoteEvent) -> None:
        try:
            self.publish(event)
        finally:
            if not connection.in_atomic_block:
                connection.close()


# Called by the producer's I/O thread (or at once, if the send already completed).
def _acknowledged(loop: asyncio.AbstractEventLoop, acknowledged: asyncio.Future, _metadata) -> None:
    _settle_threadsafe(loop, acknowledged, None)


def _failed(loop: asyncio.AbstractEventLoop, acknowledged: asyncio.Future, error: BaseException) -> None:
    _settle_threadsafe(loop, acknowledged, error)


def _settle_threadsafe(
    loop: asyncio.AbstractEventLoop, acknowledged: asyncio.Future, error: BaseException | None
) -> None:
    try:
        loop.call_soon_threadsafe(_settle, acknowledged, error)
    except RuntimeError:  # the loop has closed: nobody waits for this vote any more
        pass


def _settle(acknowledged: asyncio.Future, error: BaseException | None) -> None:
    if acknowledged.done():  # the vote timed out meanwhile
        return
    if error is None:
        acknowledged.set_result(None)
    else:
        acknowledged.set_exception(error)


_bus: VoteBus | None = None
_bus_lock = threading.Lock()


def vote_bus(*, apply_in_process: Callable[..., object]) -> VoteBus:
    """The process's bus, built on first use: Kafka when KAFKA_BROKERS is set, else one that
    applies each vote at once with `apply_in_process` (the domain's batch code)."""
    global _bus
    with _bus_lock:
        if _bus is None:
            if settings.KAFKA_BROKERS:
                _bus = KafkaVoteBus(timeout=settings.VOTE_PUBLISH_TIMEOUT)
            else:
                _bus = InProcessVoteBus(apply=apply_in_process)
        return _bus


def reset_vote_bus() -> None:
    """Drop the process's bus so the next vote builds one from the current settings."""
    global _bus
    with _bus_lock:
        if isinstance(_bus, KafkaVoteBus):
            _bus.close()
        _bus = None
