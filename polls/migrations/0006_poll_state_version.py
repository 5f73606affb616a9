"""The version a poll shows while it holds its counts back (after_close, after_vote).

The poll's version grows with every applied batch, so a hidden poll's version, and the
updates its viewers received, told about how many votes it had. Such a poll now shows
state_version, which grows only with its other changes (status, hiding). Existing polls
start from their current version, which their viewers have already seen, so no viewer
sees a version go down.
"""

from django.db import migrations, models
from django.db.models import F


def start_from_the_current_version(apps, schema_editor):
    apps.get_model("polls", "Poll").objects.update(state_version=F("version"))


class Migration(migrations.Migration):

    dependencies = [
        ("polls", "0005_poll_closes_at_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="poll",
            name="state_version",
            field=models.BigIntegerField(default=0, editable=False),
        ),
        migrations.RunPython(start_from_the_current_version, migrations.RunPython.noop),
    ]
