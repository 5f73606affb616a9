"""An index on the polls' deadlines, for the broadcaster that watches them.

Every second it looks for the open polls whose closes_at has just passed, to tell their
viewers (realtime.broadcast); without the index that look read the whole polls table.
Partial: most polls have no deadline.
"""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('polls', '0004_vote_no_foreign_key'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            model_name='poll',
            index=models.Index(condition=models.Q(('closes_at__isnull', False)), fields=['closes_at'], name='poll_closes_at_idx'),
        ),
    ]
