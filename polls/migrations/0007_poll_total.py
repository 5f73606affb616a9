"""Each poll keeps its total, the sum of its options' counters, with an index to rank by it.

The leaderboard of polls and the list ordered by total added up every option of every
visible poll on each request, on endpoints anyone may call
(docs/decisions/0005-vote-checks-off-the-hot-path.md). The worker now adds a batch's new choices to the poll's total in the statement
that grows its version; existing polls get theirs from their options here. The list's
default order, newest first, gets its index too (no sort of every poll a page).
"""

from django.db import migrations, models
from django.db.models import OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce


def totals_from_the_options(apps, schema_editor):
    Poll, Option = apps.get_model("polls", "Poll"), apps.get_model("polls", "Option")
    sums = Option.objects.filter(poll=OuterRef("pk")).order_by().values("poll").annotate(s=Sum("votes")).values("s")
    Poll.objects.update(total=Coalesce(Subquery(sums), 0))


class Migration(migrations.Migration):

    dependencies = [
        ("polls", "0006_poll_state_version"),
    ]

    operations = [
        migrations.AddField(
            model_name="poll",
            name="total",
            field=models.BigIntegerField(default=0, editable=False),
        ),
        migrations.RunPython(totals_from_the_options, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="poll",
            index=models.Index(condition=models.Q(("hidden", False)), fields=["-created_at", "-id"], name="poll_listed_idx"),
        ),
        migrations.AddIndex(
            model_name="poll",
            index=models.Index(
                condition=models.Q(("hidden", False), ("results_visibility", "always")),
                fields=["-total", "id"],
                name="poll_total_rank_idx",
            ),
        ),
    ]
