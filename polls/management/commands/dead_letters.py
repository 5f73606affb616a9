from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from polls.kafka.topics import dead_letter_topic
from polls.worker.dead_letters import dead_letters_read, dead_letters_replay


class Command(BaseCommand):
    help = (
        "List the vote messages in the dead-letter topic with the reason each was refused, "
        "or replay them into the vote topic once their cause is fixed (each is replayed once)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "action", choices=["list", "replay"], help="list: show them; replay: send them back to the vote topic."
        )
        parser.add_argument("--limit", type=int, default=None, help="At most this many dead letters.")

    def handle(self, *args, action, limit, **options):
        if not settings.KAFKA_BROKERS:
            raise CommandError("KAFKA_BROKERS is not set: dead letters live in Kafka.")
        if action == "replay":
            count = dead_letters_replay(limit=limit)
            self.stdout.write(f"replayed {count} dead letter(s) into the vote topic")
            return
        count = 0
        for _, letter in dead_letters_read(limit=limit):
            count += 1
            value = letter.value.decode(errors="replace")
            self.stdout.write(
                f"{dead_letter_topic()}[{letter.partition}]@{letter.offset} "
                f"from {letter.headers.get('dlq.topic', '?')}[{letter.headers.get('dlq.partition', '?')}]"
                f"@{letter.headers.get('dlq.offset', '?')}: {letter.reason}\n    {value[:300]}"
            )
        self.stdout.write(f"{count} dead letter(s)")
