import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from polls.topics import consumer_config, dead_letter_producer_config, ensure_topics, vote_topic
from polls.worker import VoteWorker


class Command(BaseCommand):
    help = (
        "Run the vote worker: consume vote events from Kafka in batches, apply each batch "
        "to the database in one transaction, then commit the offsets. Stops cleanly on "
        "SIGTERM or SIGINT."
    )

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=settings.VOTE_BATCH_SIZE,
                            help="Most votes applied in one transaction (default: VOTE_BATCH_SIZE).")
        parser.add_argument("--batch-wait-ms", type=int, default=settings.VOTE_BATCH_WAIT_MS,
                            help="How long a poll for a batch waits for votes (default: VOTE_BATCH_WAIT_MS).")
        parser.add_argument("--group", default=settings.KAFKA_CONSUMER_GROUP,
                            help="Kafka consumer group (default: KAFKA_CONSUMER_GROUP).")

    def handle(self, *args, batch_size, batch_wait_ms, group, **options):
        if not settings.KAFKA_BROKERS:
            raise CommandError("KAFKA_BROKERS is not set: the worker reads votes from Kafka.")
        if batch_size < 1 or batch_wait_ms < 0:
            raise CommandError("--batch-size must be at least 1 and --batch-wait-ms at least 0.")
        stop = threading.Event()

        def request_stop(signum, frame):
            stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

        consumer, producer = self._connect(group=group, batch_size=batch_size, stop=stop)
        if consumer is None:
            return
        consumer.subscribe([vote_topic()])
        worker = VoteWorker(consumer=consumer, dead_letter_producer=producer,
                            batch_size=batch_size, batch_wait_ms=batch_wait_ms, stop_event=stop)
        self.stdout.write(f"consuming {vote_topic()} as group {group}; SIGTERM or Ctrl-C stops")
        try:
            worker.run()
        finally:
            # No autocommit on close: only what the worker committed after the DB is final.
            consumer.close(autocommit=False)
            producer.close(timeout=5)
        self.stdout.write("vote worker stopped")

    def _connect(self, *, group, batch_size, stop):
        """Create the topics and clients, waiting for the broker as long as it takes."""
        wait = 1.0
        while not stop.is_set():
            try:
                ensure_topics()
                consumer = KafkaConsumer(**consumer_config(group_id=group, max_records=batch_size))
                producer = KafkaProducer(**dead_letter_producer_config())
                return consumer, producer
            except KafkaError as exc:
                self.stderr.write(f"Kafka at {','.join(settings.KAFKA_BROKERS)} unreachable ({exc}); "
                                  f"retrying in {wait:.0f} s")
                stop.wait(wait)
                wait = min(wait * 2, 30.0)
        return None, None
