"""Real PostgreSQL, Redis and Kafka (devservices) on free ports in a temporary directory.

ServiceStack is the set one test run uses (all three, each a server object a test may
stop, kill and start); Services is the bench's (any of the three, or running ones).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from devservices import KafkaServer, PostgresServer, RedisServer, ensure_installed, free_port


def new_servers(root: Path, *, postgres: bool = True, redis: bool = True, kafka: bool = True) -> dict:
    """The servers asked for, not started yet, on free ports with their data under `root`."""
    ensure_installed(postgres=postgres, redis=redis, kafka=kafka)
    servers = {}
    if postgres:
        servers["postgres"] = PostgresServer(port=free_port(), data_dir=root / "postgres")
    if redis:
        servers["redis"] = RedisServer(port=free_port(), data_dir=root / "redis")
    if kafka:
        servers["kafka"] = KafkaServer(port=free_port(), controller_port=free_port(), data_dir=root / "kafka")
    return servers


def start_in_parallel(servers, root: Path) -> None:
    """Start every server at once (Kafka takes the longest; the others start beside it).

    On a failure, the others are stopped, `root` removed and the first error raised.
    """
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, len(servers))) as pool:
        errors = [future.exception() for future in [pool.submit(server.start) for server in servers]]
    failed = [error for error in errors if error is not None]
    if failed:
        stop_all(servers, root)
        raise failed[0]
    print(
        f"\nservices up in {time.monotonic() - began:.1f} s under {root}: "
        + ", ".join(f"{s.name}:{s.port}" for s in servers),
        file=sys.stderr,
        flush=True,
    )


def stop_all(servers, root: Path | None = None) -> None:
    """Stop every server, going on past one that fails; then remove `root`."""
    for server in servers:
        try:
            server.stop()
        except Exception as exc:  # keep stopping the others
            print(f"could not stop {server!r}: {exc}", file=sys.stderr)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class ServiceStack:
    root: Path
    postgres: PostgresServer
    redis: RedisServer
    kafka: KafkaServer

    @classmethod
    def start_all(cls, prefix: str = "polling-test-services-") -> ServiceStack:
        root = Path(tempfile.mkdtemp(prefix=prefix))
        stack = cls(root=root, **new_servers(root))
        start_in_parallel(stack.services, root)
        return stack

    @property
    def services(self):
        return (self.postgres, self.redis, self.kafka)

    def environment(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.postgres.url,
            "REDIS_URL": self.redis.url,
            "KAFKA_BROKERS": self.kafka.bootstrap,
        }

    def stop_all(self, *, keep: bool = False) -> None:
        """Stop the three; remove their directory unless `keep` (its logs)."""
        stop_all(self.services, None if keep else self.root)


@dataclass
class Services:
    """The services of one benchmark run: any of the three, started in one temporary directory.

    `Services.external()` uses already running ones instead (DATABASE_URL of a user who
    may create databases, REDIS_URL, KAFKA_BROKERS): handy while iterating on a section.
    """

    root: Path | None
    pg: dict | None = None  # host, port, user, password
    redis_url: str | None = None
    kafka_bootstrap: str | None = None
    servers: list = field(default_factory=list)

    @classmethod
    def start(cls, *, postgres: bool = True, redis: bool = True, kafka: bool = True) -> Services:
        root = Path(tempfile.mkdtemp(prefix="polling-bench-"))
        servers = new_servers(root, postgres=postgres, redis=redis, kafka=kafka)
        services = cls(root=root, servers=list(servers.values()))
        if pg := servers.get("postgres"):
            services.pg = {"host": "127.0.0.1", "port": pg.port, "user": pg.user, "password": pg.password}
        if redis_server := servers.get("redis"):
            services.redis_url = redis_server.url
        if kafka_server := servers.get("kafka"):
            services.kafka_bootstrap = kafka_server.bootstrap
        start_in_parallel(services.servers, root)
        return services

    @classmethod
    def external(cls) -> Services:
        from urllib.parse import urlparse

        url = urlparse(os.environ["DATABASE_URL"])
        return cls(
            root=None,
            pg={"host": url.hostname, "port": url.port or 5432, "user": url.username, "password": url.password},
            redis_url=os.environ.get("REDIS_URL"),
            kafka_bootstrap=os.environ.get("KAFKA_BROKERS"),
        )

    def stop(self) -> None:
        stop_all(self.servers, self.root)

    def postgres_pid(self) -> int | None:
        """The postmaster's pid when this run started PostgreSQL itself (its CPU can be read)."""
        return next((server.pid for server in self.servers if server.name == "postgres"), None)

    def database_url(self, name: str) -> str:
        """A fresh database `name` on these services' PostgreSQL (dropped first if it exists)."""
        import psycopg

        pg = self.pg
        conn = psycopg.connect(
            host=pg["host"], port=pg["port"], user=pg["user"], password=pg["password"], dbname="postgres"
        )
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cursor.execute(f'CREATE DATABASE "{name}" OWNER "{pg["user"]}"')
        conn.close()
        return f"postgresql://{pg['user']}:{pg['password']}@{pg['host']}:{pg['port']}/{name}"
