"""The seed's cluster shape for real: the vote path on Kafka 3.9 with a ZooKeeper server.

The rest of the suite runs on the Kafka 4 (KRaft) broker of the test run; here a Kafka
3.9 broker and its ZooKeeper start on free ports (jars from Maven Central, see
devservices), and a real web server and a real `consume_votes` process talk to it while
sharing the test run's PostgreSQL.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from kafka import KafkaAdminClient, KafkaProducer

from devservices import KAFKA_ZK_VERSION, KafkaZooKeeperServer, ensure_installed, free_port
from polls.domain.services import counters_verify
from polls.kafka.bus import reset_vote_bus
from polls.kafka.topics import dead_letter_topic, ensure_topics, vote_topic
from tests.http import request
from testsupport.kafka import read_topic
from testsupport.processes import WebServer, WorkerProcess, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

SEED_POLL = {
    "question": "What is your favorite color?",
    "option1": "Red",
    "option2": "Blue",
    "option3": "Green",
    "option4": "Yellow",
}


@pytest.fixture(scope="module")
def zookeeper_kafka(tmp_path_factory):
    """A Kafka 3.9 broker registered in its own ZooKeeper, both on free ports."""
    ensure_installed(postgres=False, redis=False, kafka=True, kafka_versions=(KAFKA_ZK_VERSION,))
    server = KafkaZooKeeperServer(
        port=free_port(), zk_port=free_port(), data_dir=tmp_path_factory.mktemp("kafka-zookeeper")
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def zookeeper_env(zookeeper_kafka, process_env, settings):
    """The test's topic on the ZooKeeper-based broker, and a process environment pointing at it."""
    settings.KAFKA_BROKERS = [zookeeper_kafka.bootstrap]
    reset_vote_bus()
    ensure_topics()
    yield {**process_env, "KAFKA_BROKERS": zookeeper_kafka.bootstrap}
    reset_vote_bus()


def totals(server, poll_id):
    body = request("GET", f"{server.url}/polls/{poll_id}").json()
    return [body[f"option{n}"] for n in range(1, 5)]


def test_the_broker_is_kafka_3_9_registered_in_zookeeper(zookeeper_kafka):
    assert zookeeper_kafka.version.startswith("3.9.")
    # The broker's ephemeral registration node: only a ZooKeeper-mode broker has one.
    assert f"/brokers/ids/{zookeeper_kafka.broker_id}" in zookeeper_kafka.zookeeper.four_letter_command("dump")
    admin = KafkaAdminClient(bootstrap_servers=zookeeper_kafka.bootstrap)
    try:
        cluster = admin.describe_cluster()
    finally:
        admin.close()
    assert [broker["broker_id"] for broker in cluster["brokers"]] == [int(zookeeper_kafka.broker_id)]


def test_concurrent_votes_are_counted_exactly_and_a_poison_message_is_dead_lettered(zookeeper_env, tmp_path):
    web = WebServer(env=zookeeper_env, log_dir=tmp_path)
    worker = WorkerProcess(env=zookeeper_env, log_dir=tmp_path, group=zookeeper_env["KAFKA_CONSUMER_GROUP"])
    web.start()
    worker.start()
    try:
        created = request("POST", f"{web.url}/polls", SEED_POLL)
        assert created.status == 201
        poll_id = created.json()["id"]
        vote_url = f"{web.url}/polls/{poll_id}/vote"
        plan = [1 + n % 4 for n in range(160)] + [2] * 40  # 40, 80, 40, 40

        def vote(option):
            return request("POST", vote_url, {"poll_id": poll_id, "option": option}).status

        with ThreadPoolExecutor(max_workers=32) as pool:
            statuses = list(pool.map(vote, plan))
        assert statuses.count(204) == len(plan), {s: statuses.count(s) for s in set(statuses)}

        # A message no web process would write: the worker must dead-letter it and go on.
        producer = KafkaProducer(bootstrap_servers=zookeeper_env["KAFKA_BROKERS"])
        producer.send(vote_topic(), key=str(poll_id).encode(), value=b'{"not": "a vote"}').get(timeout=10)
        producer.close()
        assert vote(4) == 204

        wait_until(lambda: totals(web, poll_id) == [40, 80, 40, 41], timeout=60, what="all 201 votes counted")
        body = request("GET", f"{web.url}/polls/{poll_id}").json()
        assert body["total"] == 201
        assert counters_verify() == []

        dead = read_topic(dead_letter_topic())
        assert [message.value for message in dead] == [b'{"not": "a vote"}']
        headers = dict(dead[0].headers)
        assert headers["dlq.topic"] == vote_topic().encode()
        assert headers["dlq.reason"]
        # Nothing else went astray: the votes all reached the vote topic on this broker.
        assert len(read_topic(vote_topic())) == 202
    finally:
        web.kill()
        worker.kill()
