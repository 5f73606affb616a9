"""No foreign key check per vote row (PostgreSQL): the worker's locks make sure instead.

The composite key of migration 0003 cost each inserted row a deferred check at
commit, a third of the database's time a row in the worker's batches.
What it made sure of, the worker already does for every batch, once: it reads the
options of the batch's polls and locks them until its commit (polls.domain.services
_options_lock), and a row is inserted only with an option id that lookup returned for
the row's poll. A deletion of a poll or option locks the same rows first
(polls.signals), so a deletion and a batch take turns: a batch that came first is
committed before the deletion's cascade reads the vote rows, and one that came later
finds no options and sends its votes to the dead-letter topic. The options' unique
(poll, id) existed only for the reference and goes with it.

SQLite (the embedded mode) keeps its two single-column keys from 0001: its tables
cannot change constraints in place, and nothing there needs the speed.
"""

from django.db import migrations, models

_KEY = "vote_poll_option_fk"


def _forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f'ALTER TABLE "polls_vote" DROP CONSTRAINT IF EXISTS "{_KEY}"')


def _backward(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        f'ALTER TABLE "polls_vote" ADD CONSTRAINT "{_KEY}" FOREIGN KEY ("poll_id", "option_id") '
        'REFERENCES "polls_option" ("poll_id", "id") DEFERRABLE INITIALLY DEFERRED NOT VALID'
    )
    schema_editor.execute(f'ALTER TABLE "polls_vote" VALIDATE CONSTRAINT "{_KEY}"')


class Migration(migrations.Migration):

    dependencies = [
        ('polls', '0003_vote_one_foreign_key'),
    ]

    operations = [
        # The key goes before the unique constraint it references (reversed: after it).
        migrations.RunPython(_forward, _backward),
        migrations.RemoveConstraint(
            model_name='option',
            name='option_poll_id_key',
        ),
    ]
