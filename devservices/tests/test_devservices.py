"""Each server really starts on free ports in a temporary directory and really works."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from devservices import (
    KafkaServer,
    KafkaZooKeeperServer,
    PostgresServer,
    RedisServer,
    ServiceError,
    ensure_installed,
    free_port,
)
from devservices.install import KAFKA_ZK_VERSION


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    ensure_installed(kafka_versions=("4.1.1", KAFKA_ZK_VERSION))


def test_free_port_never_repeats_and_stays_below_the_ports_of_outgoing_connections() -> None:
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == len(ports)
    first_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(1024 <= port < first_ephemeral for port in ports), ports


def test_postgres_keeps_committed_rows_across_a_kill(tmp_path: Path) -> None:
    with PostgresServer(port=free_port(), data_dir=tmp_path / "pg") as pg:
        with psycopg.connect(pg.url) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
            cur.execute("CREATE TABLE t (v text)")
            cur.execute("INSERT INTO t VALUES ('kept')")
        conn.close()
        # Django's test runner creates its own database: the role must be allowed to.
        conn = psycopg.connect(pg.url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE test_polling")
            cur.execute("DROP DATABASE test_polling")
        conn.close()

        pg.kill()
        assert not pg.is_running()
        pg.restart()
        with psycopg.connect(pg.url) as conn, conn.cursor() as cur:
            cur.execute("SELECT v FROM t")
            assert cur.fetchall() == [("kept",)]
        conn.close()
    assert not pg.is_running()
    assert not pg.pid_file.exists()


def test_redis_answers_and_stops(tmp_path: Path) -> None:
    server = RedisServer(port=free_port(), data_dir=tmp_path / "redis")
    with server:
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        client.set("k", "v")
        assert client.get("k") == b"v"
        client.close()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(server.url).ping()


def test_start_on_a_taken_port_says_so(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(ServiceError, match=f"port {port} is already in use"):
            RedisServer(port=port, data_dir=tmp_path / "redis").start()


def _produce(bootstrap: str, topic: str, value: bytes) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        producer.send(topic, value).get(timeout=30)
    finally:
        producer.close()


def _read_all(bootstrap: str, topic: str) -> list[bytes]:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    try:
        # Right after a restart the broker may not know the topic yet (with ZooKeeper it
        # loads the metadata after it starts listening): ask again until it does.
        deadline = time.monotonic() + 60
        while not (numbers := consumer.partitions_for_topic(topic)):
            assert time.monotonic() < deadline, f"topic {topic} has no partitions in the metadata after 60 s"
            time.sleep(0.2)
            consumer.topics()  # a metadata request: partitions_for_topic may answer from its cache
        partitions = [TopicPartition(topic, p) for p in numbers]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        return [record.value for record in consumer]
    finally:
        consumer.close()


def _create_topic(bootstrap: str, topic: str) -> None:
    with KafkaAdminClient(bootstrap_servers=bootstrap) as admin:
        admin.create_topics({topic: {}}, wait_for_metadata=True)


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[KafkaServer]:
    server = KafkaServer(port=free_port(), controller_port=free_port(), data_dir=tmp_path / "kafka")
    with server:
        yield server


def test_kafka_keeps_acknowledged_messages_across_a_kill(kafka: KafkaServer) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    _create_topic(kafka.bootstrap, topic)
    _produce(kafka.bootstrap, topic, b"before the crash")

    kafka.kill()
    assert not kafka.is_running()
    kafka.restart()

    assert _read_all(kafka.bootstrap, topic) == [b"before the crash"]
    # The broker defaults apply: num.partitions=3, no auto-created topics.
    with KafkaAdminClient(bootstrap_servers=kafka.bootstrap) as admin:
        assert len(admin.describe_topics([topic])[0]["partitions"]) == 3
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap)
    try:
        assert not consumer.partitions_for_topic("never-created")
    finally:
        consumer.close()


def test_kafka_that_cannot_start_fails_loudly(tmp_path: Path) -> None:
    server = KafkaServer(port=free_port(), data_dir=tmp_path / "kafka", properties={"num.partitions": "many"})
    with pytest.raises(ServiceError, match="num.partitions"):
        server.start()
    assert not server.is_running()


def test_server_that_exits_during_start_fails_loudly(tmp_path: Path) -> None:
    server = PostgresServer(port=free_port(), data_dir=tmp_path / "pg")
    (tmp_path / "pg" / "pgdata").mkdir(parents=True)
    # Looks initialized, so no initdb, but the server finds no configuration.
    (tmp_path / "pg" / "pgdata" / "PG_VERSION").write_text("15\n")
    expected = r"(?s)exited with code \d+ before it was ready.*postgresql.conf"
    with pytest.raises(ServiceError, match=expected):
        server.start()
    assert not server.is_running()


def test_kafka_with_zookeeper(tmp_path: Path) -> None:
    server = KafkaZooKeeperServer(port=free_port(), zk_port=free_port(), data_dir=tmp_path / "kzk")
    with server:
        topic = f"t-{uuid.uuid4().hex[:8]}"
        _create_topic(server.bootstrap, topic)
        _produce(server.bootstrap, topic, b"via zookeeper")
        server.kill()
        assert server.zookeeper.is_running()
        server.restart()
        assert _read_all(server.bootstrap, topic) == [b"via zookeeper"]
    assert not server.is_running() and not server.zookeeper.is_running()
