"""Three fewer indexes on the vote rows: every index costs each inserted row.

- (poll, cast_at): no query reads it (the admin's date filter spans all polls).
- ballot_id: no query looks a ballot up by it alone.
- poll_id, the foreign key's own index: (poll, dedupe_key) and (poll, voter_key) start
  with poll_id and serve its lookups and cascades.

The field changes drop only the index: AlterField would also drop and re-add (and so
re-validate over the whole table) the foreign key of poll, hence the SQL.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('polls', '0001_initial'),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='vote',
            name='vote_poll_cast_idx',
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='vote',
                    name='ballot_id',
                    field=models.UUIDField(),
                ),
                migrations.AlterField(
                    model_name='vote',
                    name='poll',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='votes', to='polls.poll'),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "polls_vote_ballot_id_12a97e6c"',
                    reverse_sql='CREATE INDEX "polls_vote_ballot_id_12a97e6c" ON "polls_vote" ("ballot_id")',
                ),
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "polls_vote_poll_id_482e29e3"',
                    reverse_sql='CREATE INDEX "polls_vote_poll_id_482e29e3" ON "polls_vote" ("poll_id")',
                ),
            ],
        ),
    ]
