"""One foreign key check per vote row instead of two (PostgreSQL).

Every inserted vote row paid two deferred foreign key checks at commit, one per key
(poll, option): a third of the database's time per row in the worker's batches
(docs/decisions/0007-worker-batch-statements.md). One composite key, (poll_id, option_id) referencing the option's
(poll_id, id), checks both at once and says more: the row's poll is its option's
poll (the option's own key to its poll makes sure that poll exists). The options
table gets the unique (poll, id) the reference needs: options are written only when a
poll is created, so it costs nothing on the vote path.

The model's keys keep their fields and lookups (db_constraint=False); the constraint is
SQL, as Django has no composite foreign key. It is added NOT VALID and then validated,
which checks the existing rows without blocking writes meanwhile. SQLite (the embedded
mode) keeps its two keys: its tables cannot change constraints in place.
"""

import django.db.models.deletion
from django.db import migrations, models

_OLD_KEYS = {
    "polls_vote_poll_id_482e29e3_fk_polls_poll_id": ("poll_id", "polls_poll", "id"),
    "polls_vote_option_id_96f4c8e3_fk_polls_option_id": ("option_id", "polls_option", "id"),
}
_NEW_KEY = "vote_poll_option_fk"


def _forward(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        f'ALTER TABLE "polls_vote" ADD CONSTRAINT "{_NEW_KEY}" FOREIGN KEY ("poll_id", "option_id") '
        'REFERENCES "polls_option" ("poll_id", "id") DEFERRABLE INITIALLY DEFERRED NOT VALID'
    )
    schema_editor.execute(f'ALTER TABLE "polls_vote" VALIDATE CONSTRAINT "{_NEW_KEY}"')
    # The two single-column keys, whatever their names (Django's hash them).
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'polls_vote'::regclass "
            "AND contype = 'f' AND conname <> %s",
            [_NEW_KEY],
        )
        old_keys = [name for (name,) in cursor.fetchall()]
    for name in old_keys:
        schema_editor.execute(f'ALTER TABLE "polls_vote" DROP CONSTRAINT "{name}"')


def _backward(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, (column, table, target) in _OLD_KEYS.items():
        schema_editor.execute(
            f'ALTER TABLE "polls_vote" ADD CONSTRAINT "{name}" FOREIGN KEY ("{column}") '
            f'REFERENCES "{table}" ("{target}") DEFERRABLE INITIALLY DEFERRED'
        )
    schema_editor.execute(f'ALTER TABLE "polls_vote" DROP CONSTRAINT IF EXISTS "{_NEW_KEY}"')


class Migration(migrations.Migration):

    dependencies = [
        ('polls', '0002_vote_fewer_indexes'),
    ]

    operations = [
        migrations.AddConstraint(
            model_name='option',
            constraint=models.UniqueConstraint(fields=('poll', 'id'), name='option_poll_id_key'),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='vote',
                    name='poll',
                    field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='votes', to='polls.poll'),
                ),
                migrations.AlterField(
                    model_name='vote',
                    name='option',
                    field=models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.CASCADE, related_name='vote_rows', to='polls.option'),
                ),
            ],
            database_operations=[
                migrations.RunPython(_forward, _backward),
            ],
        ),
    ]
