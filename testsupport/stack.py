"""The set of real services one test run uses."""

from __future__ import annotations

import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from devservices import KafkaServer, PostgresServer, RedisServer, ensure_installed, free_port


@dataclass
class ServiceStack:
    root: Path
    postgres: PostgresServer
    redis: RedisServer
    kafka: KafkaServer

    @classmethod
    def start_all(cls) -> ServiceStack:
        ensure_installed(postgres=True, redis=True, kafka=True)
        root = Path(tempfile.mkdtemp(prefix="polling-test-services-"))
        stack = cls(
            root=root,
            postgres=PostgresServer(port=free_port(), data_dir=root / "postgres"),
            redis=RedisServer(port=free_port(), data_dir=root / "redis"),
            kafka=KafkaServer(port=free_port(), controller_port=free_port(), data_dir=root / "kafka"),
        )
        began = time.monotonic()
        # Kafka takes the longest to start; the others start beside it.
        with ThreadPoolExecutor(max_workers=3) as pool:
            futures = [pool.submit(service.start) for service in stack.services]
            errors = [future.exception() for future in futures]
        failed = [error for error in errors if error is not None]
        if failed:
            stack.stop_all()
            raise failed[0]
        print(f"\ntest services up in {time.monotonic() - began:.1f} s under {root}")
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

    def stop_all(self) -> None:
        for service in self.services:
            try:
                service.stop()
            except Exception as exc:  # keep stopping the others
                print(f"could not stop {service!r}: {exc}")
        shutil.rmtree(self.root, ignore_errors=True)
