"""The vote worker against the real broker: batches, redelivery, dead letters, shutdown."""

import io
import signal
import threading
import time

import pytest
from django.conf import settings
from django.core.management import call_command
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions
from kafka.consumer.fetcher import Fetcher

from polling.metrics import WORKER_REGISTRY
from polling.patches.kafka_records import LeanPartitionRecords
from polls.domain.services import counters_verify, get_vote_bus
from polls.kafka.topics import dead_letter_topic, vote_consumer
from polls.models import Option, Poll, Vote
from polls.tests.factories import counts, make_poll, vote_event
from polls.worker.batches import WorkerStopped
from testsupport.kafka import make_vote_worker, read_topic
from testsupport.processes import WorkerProcess, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def publish(*events):
    bus = get_vote_bus()
    for event in events:
        bus.publish(event)


def poll_batch(worker, expected: int, timeout: float = 30):
    """Poll until `expected` messages arrived (the first polls also join the group)."""
    messages = []
    deadline = time.monotonic() + timeout
    while len(messages) < expected and time.monotonic() < deadline:
        polled = worker.consumer.poll(timeout_ms=200)
        messages.extend(record for records in polled.values() for record in records)
    assert len(messages) == expected, f"got {len(messages)} of {expected} messages"
    return messages


def close(worker):
    worker.consumer.close(autocommit=False)
    worker.dead_letter_producer.close(timeout=5)


@pytest.mark.parametrize("lean_records", [True, False], ids=["lean reader", "kafka-python's reader"])
def test_a_batch_delivered_twice_is_counted_once(kafka_topic, settings, lean_records):
    settings.WORKER_LEAN_RECORDS = lean_records
    poll = make_poll()
    publish(*[vote_event(poll, 1 + n % 4) for n in range(40)])
    worker = make_vote_worker(group="redelivery")
    reader = worker.consumer._fetcher.PartitionRecords
    assert reader is (LeanPartitionRecords if lean_records else Fetcher.PartitionRecords)
    try:
        messages = poll_batch(worker, 40)
        first = worker.consume_batch(messages)
        second = worker.consume_batch(messages)
    finally:
        close(worker)
    assert (first.applied, first.duplicates) == (40, 0)
    assert (second.applied, second.duplicates) == (0, 40)
    assert counts(poll) == [10, 10, 10, 10]
    assert Vote.objects.count() == 40


def test_a_worker_stopped_between_db_commit_and_offset_commit_counts_nothing_twice(kafka_topic, process_env, tmp_path):
    poll = make_poll()
    publish(*[vote_event(poll, 2) for _ in range(25)])
    group = process_env["KAFKA_CONSUMER_GROUP"]

    # The first worker applies the batch and stops before committing its offsets.
    first = make_vote_worker(group=group)
    try:
        first.consume_batch(poll_batch(first, 25))
    finally:
        close(first)
    assert counts(poll) == [0, 25, 0, 0]

    # A restarted worker (the real command) gets the same 25 votes again, plus 5 new ones.
    publish(*[vote_event(poll, 3) for _ in range(5)])
    worker = WorkerProcess(env=process_env, log_dir=tmp_path, group=group)
    worker.start()
    try:
        wait_until(
            lambda: "25 duplicates" in worker.log() or "30 applied" in worker.log(),
            timeout=60,
            what="the restarted worker to see the redelivered batch",
        )
        wait_until(lambda: counts(poll) == [0, 25, 5, 0], timeout=30, what="the new votes")
        time.sleep(1)  # nothing more may arrive
    finally:
        assert worker.terminate() == 0
    assert counts(poll) == [0, 25, 5, 0]
    assert "25 duplicates" in worker.log()
    assert counters_verify() == []


def test_a_poison_message_goes_to_the_dead_letter_topic_and_the_next_vote_counts(kafka_topic, worker_thread):
    poll = make_poll()
    raw = KafkaProducer(bootstrap_servers=settings.KAFKA_BROKERS, acks="all")
    raw.send(kafka_topic, key=str(poll.pk).encode(), value=b'{"this is": "not a vote"')
    raw.send(kafka_topic, key=str(poll.pk).encode(), value=vote_event(poll, 9).to_bytes())  # no option 9
    raw.flush()
    raw.close()
    publish(vote_event(poll, 1))

    wait_until(lambda: counts(poll) == [1, 0, 0, 0], timeout=30, what="the good vote after the poison")
    wait_until(lambda: len(read_topic(dead_letter_topic(), timeout_ms=500)) == 2, timeout=30, what="2 dead letters")
    letters = read_topic(dead_letter_topic())
    reasons = sorted(dict(letter.headers)["dlq.reason"].decode() for letter in letters)
    assert reasons[0].startswith("not JSON")
    assert reasons[1] == f"poll {poll.pk} has no option 9"
    assert {dict(letter.headers)["dlq.topic"].decode() for letter in letters} == {kafka_topic}
    assert b'{"this is": "not a vote"' in {letter.value for letter in letters}


def set_dead_letter_size_limit(limit: int) -> None:
    """The dead-letter topic's max.message.bytes: the broker refuses a larger message."""
    admin = KafkaAdminClient(bootstrap_servers=settings.KAFKA_BROKERS)
    try:
        admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, dead_letter_topic(), configs={"max.message.bytes": str(limit)})]
        )
    finally:
        admin.close()


def dead_letter_retries() -> float:
    return WORKER_REGISTRY.get_sample_value("polling_worker_dead_letter_retries_total") or 0.0


@pytest.mark.parametrize("then", ["the broker takes it", "the worker stops"])
def test_a_dead_letter_the_broker_refuses_holds_its_batch_until_it_is_written(kafka_topic, then):
    """kafka-python's flush() only logs a failed write: without reading each send's result,
    the batch's offsets were committed past a message that was in neither the database
    nor the dead-letter topic."""
    poll = make_poll()
    poison = b'{"this is": "not a vote", "padding": "' + b"x" * 2000 + b'"}'
    set_dead_letter_size_limit(1000)
    raw = KafkaProducer(bootstrap_servers=settings.KAFKA_BROKERS, acks="all")
    raw.send(kafka_topic, key=str(poll.pk).encode(), value=poison)
    raw.flush()
    raw.close()
    publish(vote_event(poll, 1))
    worker = make_vote_worker(group="dead-letter-refused")
    worker.db_retry_max_wait = 0.2
    ended: dict[str, object] = {}

    def consume(messages) -> None:
        try:
            ended["outcome"] = worker.consume_batch(messages)
        except Exception as exc:  # noqa: BLE001 - asserted below
            ended["error"] = exc

    retries_before = dead_letter_retries()
    try:
        thread = threading.Thread(target=consume, args=(poll_batch(worker, 2),), daemon=True)
        thread.start()
        wait_until(
            lambda: dead_letter_retries() >= retries_before + 2,
            timeout=30,
            what="the refused dead letter to be sent again",
        )
        assert thread.is_alive(), ended  # the batch is not done: its offsets cannot be committed
        assert counts(poll) == [1, 0, 0, 0]  # its good vote is in the database already
        assert read_topic(dead_letter_topic(), timeout_ms=500) == []

        if then == "the broker takes it":
            set_dead_letter_size_limit(1048588)
            thread.join(30)
            assert not thread.is_alive()
            outcome = ended["outcome"]
            assert (outcome.applied, outcome.dead_lettered) == (1, 1)
            letters = read_topic(dead_letter_topic())
            assert [letter.value for letter in letters] == [poison]
        else:
            worker.stop()
            thread.join(30)
            assert not thread.is_alive()
            assert isinstance(ended.get("error"), WorkerStopped)
            assert read_topic(dead_letter_topic(), timeout_ms=500) == []
    finally:
        close(worker)
    assert counts(poll) == [1, 0, 0, 0]


def test_the_worker_command_stops_cleanly_on_sigterm_and_sigint(process_env, tmp_path):
    for number, sig in enumerate((signal.SIGTERM, signal.SIGINT)):
        worker = WorkerProcess(
            env=process_env, log_dir=tmp_path, group=process_env["KAFKA_CONSUMER_GROUP"], name=f"worker-{number}"
        )
        worker.start()
        worker.process.send_signal(sig)
        assert worker.process.wait(30) == 0
        assert "vote worker stopped" in worker.log()


def test_the_worker_command_explains_a_missing_broker_setting(process_env, tmp_path):
    env = {**process_env, "KAFKA_BROKERS": ""}
    worker = WorkerProcess(env=env, log_dir=tmp_path, group="none")
    worker.start(wait=False)
    assert worker.process.wait(60) == 1
    assert "KAFKA_BROKERS is not set" in worker.log()


def test_dead_letters_can_be_listed_and_replayed_once_their_cause_is_fixed(kafka_topic, worker_thread):
    poll = make_poll(options=("Yes", "No"))
    publish(vote_event(poll, 1))
    orphan = vote_event(poll.pk + 1000, 1)  # a poll that does not exist (yet)
    raw = KafkaProducer(bootstrap_servers=settings.KAFKA_BROKERS, acks="all")
    raw.send(kafka_topic, key=orphan.key, value=orphan.to_bytes())
    raw.flush()
    raw.close()
    wait_until(lambda: len(read_topic(dead_letter_topic(), timeout_ms=500)) == 1, timeout=30, what="the dead letter")

    out = io.StringIO()
    call_command("dead_letters", "list", stdout=out)
    assert f"poll {poll.pk + 1000} has no option 1" in out.getvalue()
    assert out.getvalue().rstrip().endswith("1 dead letter(s)")

    # The cause is fixed: the poll it was for now exists.
    fixed = Poll.objects.create(pk=poll.pk + 1000, question="Restored")
    Option.objects.create(poll=fixed, position=1, text="only")
    out = io.StringIO()
    call_command("dead_letters", "replay", stdout=out)
    assert out.getvalue().strip() == "replayed 1 dead letter(s) into the vote topic"
    wait_until(lambda: counts(fixed) == [1], timeout=30, what="the replayed vote")
    out = io.StringIO()
    call_command("dead_letters", "replay", stdout=out)  # each dead letter is replayed once
    assert out.getvalue().strip() == "replayed 0 dead letter(s) into the vote topic"
    assert counts(poll) == [1, 0]


def test_the_worker_consumer_lets_the_broker_hold_a_fetch_for_its_wait_and_min_bytes(kafka_topic, settings):
    """The broker holds a fetch until it has fetch_min_bytes of new votes or fetch_max_wait_ms
    passed, and the client keeps one fetch in flight: with kafka-python's 500 ms default
    wait, votes acknowledged at 1,000 a second sat unfetched for 480 to 540 ms at times
    (bench/ws_latency.py --source kafka); with its 1 byte minimum, at a hundred votes a
    second the worker applied a batch for every vote or two."""
    assert (settings.VOTE_FETCH_MAX_WAIT_MS, settings.VOTE_FETCH_MIN_BYTES) == (50, 65536)  # the defaults, measured
    settings.VOTE_FETCH_MAX_WAIT_MS = 37
    settings.VOTE_FETCH_MIN_BYTES = 4096
    worker = make_vote_worker(group="fetch-wait")
    try:
        assert worker.consumer.config["fetch_max_wait_ms"] == 37
        assert worker.consumer.config["fetch_min_bytes"] == 4096
        # One vote, far below the minimum, is still fetched once the wait is over.
        poll = make_poll()
        publish(vote_event(poll, 2))
        assert worker.consume_batch(poll_batch(worker, 1, timeout=10)).applied == 1
        assert counts(poll) == [0, 1, 0, 0]
    finally:
        close(worker)


def test_the_worker_takes_partitions_added_to_its_topic_within_seconds(kafka_topic, settings):
    """The worker's consumer learns of a topic's partitions only when its metadata ages out
    (kafka-python: 5 minutes by default) unless an error makes it ask sooner. A consumer
    whose group formed on metadata without the topic's partitions sat idle that long (a
    worker test waited 30 s in vain for a vote), and partitions an operator adds went
    unread as long. The worker's metadata ages out in seconds; new partitions make it
    rejoin its group and take them."""
    consumer = vote_consumer(group_id=f"workers-{kafka_topic}", max_records=10)
    admin = KafkaAdminClient(bootstrap_servers=settings.KAFKA_BROKERS)
    try:
        consumer.subscribe([kafka_topic])

        def assigned(count: int):
            def check() -> bool:
                consumer.poll(timeout_ms=200)
                return len(consumer.assignment()) == count

            return check

        wait_until(assigned(settings.KAFKA_TOPIC_PARTITIONS), timeout=30, what="the topic's partitions")
        admin.create_partitions({kafka_topic: NewPartitions(total_count=settings.KAFKA_TOPIC_PARTITIONS + 2)})
        added = time.monotonic()
        wait_until(assigned(settings.KAFKA_TOPIC_PARTITIONS + 2), timeout=30, what="the added partitions")
        assert time.monotonic() - added < 15
    finally:
        admin.close()
        consumer.close(autocommit=False)
