"""Votes published to Kafka by one process from 64 concurrent publishers: which client, how.

    .venv/bin/python -m bench.kafka_publish [--seconds 5] [--rounds 2] [--publishers 64]

Starts its own Kafka (devservices, free port) and, in rounds, measures votes/s and the
process's CPU per vote of:

- threads: the web's old path, a thread per waiting vote (KafkaVoteBus.publish);
- loop: the lean path's, kafka-python's acknowledgement completed into an asyncio
  future (KafkaVoteBus.publish_async), at Python's switch interval and at 0.25 ms;
- aiokafka (when installed, bench/requirements.txt): AIOKafkaProducer.send_and_wait with
  the same acks=all, idempotence and linger, on the loop, no thread.

Not a test: it prints figures (docs/decisions/0001-lean-vote-path.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
import uuid
from datetime import UTC, datetime

from bench.common import log
from testsupport.services import Services


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.kafka_publish", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--publishers", type=int, default=64)
    args = parser.parse_args()
    services = Services.start(postgres=False, redis=False, kafka=True)
    try:
        os.environ.update(
            DEBUG="1",
            KAFKA_BROKERS=services.kafka_bootstrap,
            KAFKA_TOPIC="bench-publish",
            DJANGO_SETTINGS_MODULE="polling.settings",
            LOG_LEVEL="WARNING",
        )
        import django

        django.setup()
        from polls.kafka.topics import ensure_topics

        ensure_topics()
        for round_index in range(args.rounds):
            for name, measure in _measures(services.kafka_bootstrap):
                votes, cpu = measure(args.seconds, args.publishers)
                log(
                    f"round {round_index + 1} {name}: {votes / args.seconds:,.0f} votes/s, "
                    f"{cpu / max(votes, 1) * 1000:.3f} ms CPU per vote"
                )
    finally:
        services.stop()


def _event():
    from polls.kafka.events import VoteEvent

    return VoteEvent(vote_id=uuid.uuid4(), poll_id=1, options=(1,), voter_key="bench", cast_at=datetime.now(UTC))


def _measures(bootstrap: str):
    yield "threads (publish)", _threads
    yield "loop (publish_async), switch interval 5 ms", lambda s, n: _with_switch(0.005, _loop, s, n)
    yield "loop (publish_async), switch interval 0.25 ms", lambda s, n: _with_switch(0.00025, _loop, s, n)
    try:
        import aiokafka  # noqa: F401
    except ImportError:
        return
    yield "aiokafka (send_and_wait)", lambda s, n: _aiokafka(bootstrap, s, n)


def _with_switch(interval: float, measure, seconds: float, publishers: int):
    before = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    try:
        return measure(seconds, publishers)
    finally:
        sys.setswitchinterval(before)


def _threads(seconds: float, publishers: int) -> tuple[int, float]:
    from polls.kafka.bus import KafkaVoteBus

    bus = KafkaVoteBus(timeout=5)
    bus.publish(_event())
    done = [0] * publishers
    stop = time.monotonic() + seconds

    def publish(index: int) -> None:
        while time.monotonic() < stop:
            bus.publish(_event())
            done[index] += 1

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(publishers)]
    cpu = time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu = time.process_time() - cpu
    bus.close()
    return sum(done), cpu


def _loop(seconds: float, publishers: int) -> tuple[int, float]:
    from polls.kafka.bus import KafkaVoteBus

    bus = KafkaVoteBus(timeout=5)
    try:
        return asyncio.run(_publishers(bus.publish_async, seconds, publishers))
    finally:
        bus.close()


def _aiokafka(bootstrap: str, seconds: float, publishers: int) -> tuple[int, float]:
    from aiokafka import AIOKafkaProducer
    from django.conf import settings

    async def run() -> tuple[int, float]:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=settings.KAFKA_LINGER_MS
        )
        await producer.start()
        try:

            async def publish(event) -> None:
                await asyncio.wait_for(producer.send_and_wait(settings.KAFKA_TOPIC, event.to_bytes(), key=event.key), 5)

            return await _publishers(publish, seconds, publishers)
        finally:
            await producer.stop()

    return asyncio.run(run())


async def _publishers(publish, seconds: float, publishers: int) -> tuple[int, float]:
    await publish(_event())
    done = [0]
    stop = time.monotonic() + seconds

    async def one() -> None:
        while time.monotonic() < stop:
            await publish(_event())
            done[0] += 1

    cpu = time.process_time()
    await asyncio.gather(*(one() for _ in range(publishers)))
    return done[0], time.process_time() - cpu


if __name__ == "__main__":
    main()
