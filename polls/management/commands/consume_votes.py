import argparse
import logging
import os
import signal
import sys
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from kafka import KafkaProducer
from kafka.errors import KafkaError

from polling.heap import freeze_startup_heap
from polling.metrics import worker_metrics_serve
from polls.domain.watchers import poll_deadlines_watch
from polls.kafka.topics import dead_letter_producer_config, ensure_topics, vote_consumer, vote_topic
from polls.worker.loop import VoteWorker

# Through logging, not self.stdout: in production every line the worker writes is JSON.
logger = logging.getLogger("polls.worker")

# Seconds a worker stopping after a stall has to finish its batches before it is ended.
STALL_EXIT_GRACE = 30.0


class Command(BaseCommand):
    help = (
        "Run the vote worker: consume vote events from Kafka in batches, apply each batch "
        "to the database in one transaction, then commit the offsets. Stops cleanly on "
        "SIGTERM or SIGINT."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--batch-size",
            type=int,
            default=settings.VOTE_BATCH_SIZE,
            help="Most votes applied in one transaction (default: VOTE_BATCH_SIZE).",
        )
        parser.add_argument(
            "--batch-wait-ms",
            type=int,
            default=settings.VOTE_BATCH_WAIT_MS,
            help="How long a poll for a batch waits for votes (default: VOTE_BATCH_WAIT_MS).",
        )
        parser.add_argument(
            "--apply-threads",
            type=int,
            default=settings.VOTE_APPLY_THREADS,
            help="Threads applying batches of different partitions at once, each on its own "
            "database connection (default: VOTE_APPLY_THREADS; 1 on SQLite).",
        )
        parser.add_argument(
            "--group",
            default=settings.KAFKA_CONSUMER_GROUP,
            help="Kafka consumer group (default: KAFKA_CONSUMER_GROUP).",
        )
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=settings.WORKER_METRICS_PORT,
            help="Serve Prometheus metrics at http://<addr>:PORT/metrics; 0 turns "
            "them off (default: WORKER_METRICS_PORT, off).",
        )
        parser.add_argument(
            "--metrics-addr", default="0.0.0.0", help="Address the metrics server listens on (default: 0.0.0.0)."
        )
        parser.add_argument(
            "--progress-interval",
            type=float,
            default=settings.WORKER_PROGRESS_INTERVAL,
            help="Seconds between progress lines (votes applied, batches, lag); 0 turns "
            "them off (default: WORKER_PROGRESS_INTERVAL, 30).",
        )
        parser.add_argument(
            "--stall-timeout",
            type=float,
            default=settings.WORKER_STALL_TIMEOUT,
            help="Seconds votes may wait while nothing is applied before the worker logs "
            "an ERROR and counts a stall; 0 turns that off (default: WORKER_STALL_TIMEOUT, 60).",
        )
        parser.add_argument(
            "--exit-on-stall",
            action=argparse.BooleanOptionalAction,
            default=settings.WORKER_EXIT_ON_STALL,
            help="Stop with exit status 1 on a stall, for a supervisor to restart the worker "
            "(default: WORKER_EXIT_ON_STALL, off).",
        )

    def handle(
        self,
        *args,
        batch_size,
        batch_wait_ms,
        apply_threads,
        group,
        metrics_port,
        metrics_addr,
        progress_interval,
        stall_timeout,
        exit_on_stall,
        **options,
    ):
        if not settings.KAFKA_BROKERS:
            raise CommandError("KAFKA_BROKERS is not set: the worker reads votes from Kafka.")
        if batch_size < 1 or batch_wait_ms < 0 or apply_threads < 1:
            raise CommandError("--batch-size and --apply-threads must be at least 1 and --batch-wait-ms at least 0.")
        if not 0 <= metrics_port <= 65535 or progress_interval < 0 or stall_timeout < 0:
            raise CommandError("--metrics-port must be 0 to 65535, --progress-interval and --stall-timeout at least 0.")
        metrics_server = None
        if metrics_port:
            try:
                metrics_server = worker_metrics_serve(port=metrics_port, addr=metrics_addr)
            except OSError as exc:
                raise CommandError(f"cannot serve metrics on {metrics_addr}:{metrics_port}: {exc}") from exc
            logger.info("metrics at http://%s:%d/metrics", metrics_addr, metrics_port)
        try:
            stalled = self._consume(
                group=group,
                batch_size=batch_size,
                batch_wait_ms=batch_wait_ms,
                apply_threads=apply_threads,
                progress_interval=progress_interval,
                stall_timeout=stall_timeout,
                exit_on_stall=exit_on_stall,
            )
        finally:
            if metrics_server is not None:
                metrics_server.shutdown()
        if stalled:
            raise CommandError("stopped after a stall (--exit-on-stall): votes were waiting and none was applied")

    def _consume(
        self, *, group, batch_size, batch_wait_ms, apply_threads, progress_interval, stall_timeout, exit_on_stall
    ) -> bool:
        """Run the worker until a signal (False) or, with exit_on_stall, a stall (True)."""
        stop = threading.Event()
        stalled = threading.Event()
        # The applying threads get the GIL back sooner after each database round trip.
        sys.setswitchinterval(settings.WORKER_SWITCH_INTERVAL_MS / 1000)

        def request_stop(signum, frame):
            stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

        def stop_on_stall():
            logger.error("stopping the worker after the stall, for its supervisor to start it again")
            stalled.set()
            stop.set()
            # A polling thread stuck inside the Kafka client would never see the stop.
            deadline = threading.Timer(STALL_EXIT_GRACE, os._exit, args=(1,))
            deadline.daemon = True
            deadline.start()

        consumer, producer = self._connect(group=group, batch_size=batch_size, stop=stop)
        if consumer is None:
            return False
        worker = VoteWorker(
            consumer=consumer,
            dead_letter_producer=producer,
            batch_size=batch_size,
            batch_wait_ms=batch_wait_ms,
            stop_event=stop,
            progress_interval=progress_interval,
            apply_threads=apply_threads,
            stall_timeout=stall_timeout,
            on_stall=stop_on_stall if exit_on_stall else None,
        )
        worker.subscribe([vote_topic()])
        # The worker tells viewers of the polls whose deadline passes (realtime's broadcaster).
        poll_deadlines_watch()
        logger.info(
            "consuming %s as group %s (thread switch interval %.2f ms); SIGTERM or Ctrl-C stops",
            vote_topic(),
            group,
            sys.getswitchinterval() * 1000,
        )
        # Full garbage collections skip the imports and the clients built above (see polling.heap).
        freeze_startup_heap()
        try:
            worker.run()
        finally:
            # No autocommit on close: only what the worker committed after the DB is final.
            consumer.close(autocommit=False)
            producer.close(timeout=5)
        return stalled.is_set()

    def _connect(self, *, group, batch_size, stop):
        """Create the topics and clients, waiting for the broker as long as it takes."""
        wait = 1.0
        while not stop.is_set():
            try:
                ensure_topics()
                consumer = vote_consumer(group_id=group, max_records=batch_size)
                # A topic created a moment ago can be missing from this client's first
                # metadata; joining the group then assigns it no partitions, and the worker
                # idles until the next metadata refresh (minutes). Join once it is known.
                if not consumer.partitions_for_topic(vote_topic()):
                    consumer.close(autocommit=False)
                    raise KafkaError(f"no partitions known yet for topic {vote_topic()}")
                producer = KafkaProducer(**dead_letter_producer_config())
                return consumer, producer
            except KafkaError as exc:
                logger.warning(
                    "Kafka at %s unreachable (%s); retrying in %.0f s", ",".join(settings.KAFKA_BROKERS), exc, wait
                )
                stop.wait(wait)
                wait = min(wait * 2, 30.0)
        return None, None
