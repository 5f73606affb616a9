"""The worker's lag, measured at the broker, and the watchdog that reports a worker that applies nothing."""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import connection
from kafka import KafkaAdminClient, TopicPartition
from kafka.errors import KafkaError

from polling.metrics import WORKER_REGISTRY
from polls.domain.services import get_vote_bus
from polls.tests.factories import counts, make_poll, vote_event
from polls.worker.lag import group_lags
from testsupport.kafka import make_vote_worker
from testsupport.processes import wait_until


def topic_partitions() -> set[TopicPartition]:
    return {TopicPartition(settings.KAFKA_TOPIC, p) for p in range(settings.KAFKA_TOPIC_PARTITIONS)}


def stalls() -> float:
    return WORKER_REGISTRY.get_sample_value("polling_worker_stalls_total") or 0.0


def lag_gauge() -> float:
    return sum(
        sample.value
        for metric in WORKER_REGISTRY.collect()
        if metric.name == "polling_worker_consumer_lag"
        for sample in metric.samples
        if sample.labels["topic"] == settings.KAFKA_TOPIC
    )


def measured(admin, group: str) -> dict:
    """group_lags, asked again while the broker's group coordinator is still starting."""
    result = {}

    def ask() -> bool:
        try:
            result.update(group_lags(admin, group_id=group, partitions=topic_partitions()))
        except KafkaError:
            return False
        return True

    wait_until(ask, timeout=30, interval=0.5, what="the group's offsets")
    return result


def test_lag_is_the_topics_end_against_the_groups_committed_offsets(kafka_topic, transactional_db):
    poll = make_poll()
    for option in (1, 2, 3, 1):
        get_vote_bus().publish(vote_event(poll, option))
    admin = KafkaAdminClient(bootstrap_servers=settings.KAFKA_BROKERS)
    worker = make_vote_worker(group="lag-measured")
    try:
        # Nothing committed yet: every vote in the topic is waiting.
        assert sum(measured(admin, "lag-measured").values()) == 4
        messages = []
        wait_until(
            lambda: (
                messages.extend(r for rs in worker.consumer.poll(timeout_ms=200).values() for r in rs)
                or len(messages) == 4
            ),
            timeout=30,
            what="the four votes",
        )
        worker.consume_batch(messages)
        worker.commit_offsets({TopicPartition(m.topic, m.partition): m.offset + 1 for m in messages})
        assert measured(admin, "lag-measured") == {
            (settings.KAFKA_TOPIC, p): 0 for p in range(settings.KAFKA_TOPIC_PARTITIONS)
        }
    finally:
        admin.close()
        worker.consumer.close(autocommit=False)
        worker.dead_letter_producer.close(timeout=5)


def test_a_worker_that_applies_nothing_while_votes_wait_is_reported_once_and_recovers(
    kafka_topic, transactional_db, caplog
):
    """Its consumer holds every partition and its loop consumes nothing: the lag from the broker
    grows, the watchdog logs an ERROR, counts the stall and calls on_stall, once."""
    called = threading.Event()
    worker = make_vote_worker(group="stalled", stall_timeout=3, on_stall=called.set)
    before = stalls()
    poll = make_poll()
    try:
        wait_until(
            lambda: worker.consumer.poll(timeout_ms=200) == {} and len(worker.consumer.assignment()) == 6,
            timeout=30,
            what="the worker's partitions",
        )
        for option in (1, 2, 2):
            get_vote_bus().publish(vote_event(poll, option))
        with caplog.at_level(logging.ERROR, logger="polls.worker.lag"):
            worker.lag_monitor.start()  # the monitor alone: the worker's loop does not run
            assert called.wait(30), "the watchdog never reported the stall"
            wait_until(lambda: lag_gauge() == 3, timeout=10, what="the lag gauge at 3")
            worker.lag_monitor.check_stall(worker.activity.last_batch_done + 3600)  # still stalled: not again
            worker.lag_monitor.stop()
        assert stalls() == before + 1
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and errors[0].startswith("worker stalled: 3 votes waiting on 6 partitions")

        # The loop running again applies the votes, and the lag drops to 0.
        thread = threading.Thread(target=lambda: (worker.run(), connection.close()), daemon=True)
        thread.start()
        wait_until(lambda: counts(poll) == [1, 2, 0, 0], timeout=30, what="the waiting votes")
        wait_until(lambda: lag_gauge() == 0, timeout=30, what="the lag gauge at 0")
        assert stalls() == before + 1
    finally:
        worker.stop()
        if "thread" in locals():
            thread.join(30)
        worker.consumer.close(autocommit=False)
        worker.dead_letter_producer.close(timeout=5)


def test_a_worker_told_to_stop_on_a_stall_stops(kafka_topic, transactional_db):
    """WORKER_EXIT_ON_STALL's path: on_stall stops the running worker (the command then exits 1)."""
    stopped = threading.Event()
    worker = make_vote_worker(group="stops-on-stall", stall_timeout=2, on_stall=lambda: worker.stop())
    poll = make_poll()
    thread = threading.Thread(target=lambda: (worker.run(), connection.close(), stopped.set()), daemon=True)
    try:
        thread.start()
        wait_until(lambda: len(worker.consumer.assignment()) == 6, timeout=30, what="the worker's partitions")
        # A real consumer that fetches nothing: its partitions paused.
        worker.consumer.pause(*worker.consumer.assignment())
        get_vote_bus().publish(vote_event(poll, 4))
        assert stopped.wait(30), "the worker did not stop on the stall"
        assert counts(poll) == [0, 0, 0, 0]
    finally:
        worker.stop()
        thread.join(30)
        worker.consumer.close(autocommit=False)
        worker.dead_letter_producer.close(timeout=5)
