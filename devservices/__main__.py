"""``python -m devservices up|down|status|install``: the project's own long-lived servers.

Data, logs and pidfiles live in ``<repo>/.services/<service>``. ``up`` prints only the
environment lines on stdout (progress and errors go to stderr), so its output can be
sourced or appended to an env file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from ._base import Service, ServiceError, port_open, services_dir
from .install import KAFKA_VERSION, KAFKA_ZK_VERSION, ensure_installed
from .kafka_cluster import KafkaCluster
from .kafka_server import KafkaServer
from .postgres import PostgresServer
from .redis_server import RedisServer


def _services(kafka_brokers: int = 1) -> tuple[PostgresServer, RedisServer, KafkaServer | KafkaCluster]:
    root = services_dir()
    return (
        PostgresServer(port=5432, data_dir=root / "postgres"),
        RedisServer(port=6379, data_dir=root / "redis"),
        _kafka(kafka_brokers),
    )


def _kafka(brokers: int) -> KafkaServer | KafkaCluster:
    """One node on 9092 (controller 9093), or a cluster on 9092, 9094, ... (controllers 9093, 9095, ...)."""
    if brokers == 1:
        return KafkaServer(port=9092, controller_port=9093, data_dir=services_dir() / "kafka")
    return KafkaCluster(
        size=brokers,
        ports=[9092 + 2 * n for n in range(brokers)],
        controller_ports=[9093 + 2 * n for n in range(brokers)],
        data_dir=services_dir() / f"kafka-cluster-{brokers}",
    )


def _running_kafka() -> KafkaServer | KafkaCluster:
    """Whichever Kafka shape `up` left running (one node if none runs)."""
    for brokers in (3, 1):
        kafka = _kafka(brokers)
        if any(node.is_running() for node in getattr(kafka, "nodes", [kafka])):
            return kafka
    return _kafka(1)


def _stop_debian_cluster(port: int) -> None:
    """Stop a cluster of Debian's postgresql package that holds ``port``.

    Installing the postgresql package creates a "main" cluster on 5432 and may start
    it; that server is nothing of ours, but it is disposable on a development
    machine, so it is stopped (not removed) to free the port.
    """
    if shutil.which("pg_lsclusters") is None:
        return
    listing = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True)
    for line in listing.stdout.splitlines():
        version, cluster, cluster_port, status = line.split()[:4]
        if cluster_port == str(port) and status.startswith("online"):
            print(
                f"devservices: stopping Debian's PostgreSQL cluster {version}/{cluster} to free port {port}",
                file=sys.stderr,
            )
            subprocess.run(["pg_ctlcluster", version, cluster, "stop"], check=False)


def up(kafka_brokers: int = 1) -> int:
    ensure_installed()
    postgres, redis, kafka = services = _services(kafka_brokers)
    if not postgres.is_running() and port_open(postgres.port):
        _stop_debian_cluster(postgres.port)
    # Started side by side: Kafka alone takes several seconds to come up.
    with ThreadPoolExecutor(len(services)) as pool:
        futures = [(service, pool.submit(service.start)) for service in services]
    failed = False
    for service, future in futures:
        error = future.exception()
        if error is not None:
            print(f"devservices: {service.name} failed: {error}", file=sys.stderr)
            failed = True
    if failed:
        return 1
    print(f"DATABASE_URL={postgres.url}")
    print(f"REDIS_URL={redis.url}")
    print(f"KAFKA_BROKERS={kafka.bootstrap}")
    return 0


def down() -> int:
    postgres, redis, _ = _services()
    for service in (_running_kafka(), redis, postgres):
        was_running = service.is_running()
        service.stop()
        if was_running:
            print(f"devservices: stopped {service.name}", file=sys.stderr)
    return 0


def status() -> int:
    postgres, redis, _ = _services()
    kafka = _running_kafka()
    services: tuple[Service, ...] = (postgres, redis, *getattr(kafka, "nodes", [kafka]))
    for service in services:
        pid = service.pid
        state = f"running (pid {pid})" if pid is not None else "stopped"
        print(f"{service.name:<9} 127.0.0.1:{service.port:<5} {state}   {service.data_dir}")
    return 0 if all(service.is_running() for service in services) else 3


def install() -> int:
    # Everything the test suite needs, Chromium for the live page's tests and nginx for
    # the scale-out test's front door included.
    ensure_installed(kafka_versions=(KAFKA_VERSION, KAFKA_ZK_VERSION), browser=True, proxy=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devservices", description="PostgreSQL, Redis and Kafka on 127.0.0.1"
    )
    parser.add_argument(
        "command",
        choices=["up", "down", "status", "install"],
        help="up: install if needed, start and print env lines; down: stop; "
        "status: show (exit 3 unless all run); install: only install",
    )
    parser.add_argument(
        "--kafka-brokers",
        type=int,
        choices=[1, 3],
        default=int(os.environ.get("KAFKA_BROKERS_COUNT") or 1),
        help="up: one Kafka node (the default) or a replicated cluster of three "
        "(default: $KAFKA_BROKERS_COUNT, else 1)",
    )
    arguments = parser.parse_args(argv)
    if arguments.kafka_brokers not in (1, 3):  # a default from the environment skips `choices`
        parser.error(f"KAFKA_BROKERS_COUNT must be 1 or 3, not {arguments.kafka_brokers}")
    command = arguments.command
    try:
        if command == "up":
            return up(arguments.kafka_brokers)
        return {"down": down, "status": status, "install": install}[command]()
    except ServiceError as error:
        print(f"devservices: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
