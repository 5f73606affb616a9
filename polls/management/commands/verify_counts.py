from django.core.management.base import BaseCommand, CommandError

from polls.domain.services import counters_verify


class Command(BaseCommand):
    help = (
        "Compare every option's vote counter, and every poll's total, with the number of "
        "their vote rows. Exits 1 when any differ; with --repair, sets them to the counts."
    )

    def add_arguments(self, parser):
        parser.add_argument("--repair", action="store_true", help="Set each wrong counter to its row count.")

    def handle(self, *args, repair, **options):
        mismatches = counters_verify(repair=repair)
        for mismatch in mismatches:
            if mismatch.position == 0:
                what = f"poll {mismatch.poll_id} total: {mismatch.counter}, vote rows {mismatch.rows}"
            else:
                what = (
                    f"poll {mismatch.poll_id} option {mismatch.position}: counter {mismatch.counter}, "
                    f"vote rows {mismatch.rows}"
                )
            self.stdout.write(what + (" (repaired)" if repair else ""))
        if not mismatches:
            self.stdout.write("all counters match their vote rows")
        elif not repair:
            raise CommandError(f"{len(mismatches)} counter(s) differ from their vote rows; --repair fixes them")
