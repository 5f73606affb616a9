from django.conf import settings
from django.db import models, router, transaction
from django.db.models.functions import Coalesce


class _DeleteLockingOptions(models.QuerySet):
    """A queryset whose delete() first locks the options of every poll it touches, in one statement.

    The lock of options_lock_for_delete (below), which a single poll's or option's
    deletion takes in its pre_delete receiver (polls.signals), taken here once for all
    the polls of a bulk deletion (the admin's "delete selected"). Poll by poll, in the
    cascade's order of poll ids, a batch spanning two of the polls whose option ids run
    the other way (options added to the older poll later) deadlocked with the deletion.
    """

    poll_ids_field: str  # the field of this model that holds the poll id

    def delete(self):
        using = self._db or router.db_for_write(self.model)  # where QuerySet.delete deletes
        with transaction.atomic(using=using, savepoint=False):
            options_lock_for_delete(using, poll__in=self.values(self.poll_ids_field))
            return super().delete()

    delete.alters_data = True
    delete.queryset_only = True


class PollQuerySet(_DeleteLockingOptions):
    poll_ids_field = "pk"


class Poll(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed"

    class Visibility(models.TextChoices):
        ALWAYS = "always", "Always"
        AFTER_VOTE = "after_vote", "After the viewer voted"
        AFTER_CLOSE = "after_close", "After the poll closed"

    class OneVotePer(models.TextChoices):
        NONE = "none", "No limit (the seed's behaviour)"
        VOTER = "voter", "One per anonymous voter token"
        USER = "user", "One per signed-in user"

    question = models.CharField(max_length=500)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    # Votes after this moment are refused at the API, with no job needed to close the poll.
    closes_at = models.DateTimeField(null=True, blank=True)
    results_visibility = models.CharField(max_length=16, choices=Visibility.choices, default=Visibility.ALWAYS)
    one_vote_per = models.CharField(max_length=8, choices=OneVotePer.choices, default=OneVotePer.NONE)
    # 1 is a single-choice poll; more lets a ballot choose up to this many options.
    max_choices = models.PositiveSmallIntegerField(default=1)
    # Hidden by a moderator: gone from the API, the leaderboard and the WebSockets.
    hidden = models.BooleanField(default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    # Grows by one with every batch that changes the poll's counters, in the same
    # transaction: live viewers use it to drop stale broadcasts.
    version = models.BigIntegerField(default=0, editable=False)
    # The version of the poll's last change that was not a vote (its status, its hiding):
    # what the poll says as its version while it holds its counts back, so that neither the
    # version nor the rate of updates tells how many batches (about, votes) it received.
    state_version = models.BigIntegerField(default=0, editable=False)
    # The sum of its options' counters, kept with them in the batch's transaction (and
    # set again when an option goes): the leaderboard of polls and the list ordered by
    # total read it instead of adding up every option of every poll on each request
    # (docs/decisions/0005-vote-checks-off-the-hot-path.md).
    total = models.BigIntegerField(default=0, editable=False)

    objects = PollQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "-created_at"], name="poll_status_created_idx"),
            # The broadcaster's look, every second, for polls whose deadline just passed.
            models.Index(fields=["closes_at"], name="poll_closes_at_idx", condition=models.Q(closes_at__isnull=False)),
            # GET /polls, newest first: the first page read off the index, not a sort of all.
            models.Index(fields=["-created_at", "-id"], name="poll_listed_idx", condition=models.Q(hidden=False)),
            # The leaderboard of polls, read off the index: the public, visible ones.
            models.Index(
                fields=["-total", "id"],
                name="poll_total_rank_idx",
                condition=models.Q(hidden=False, results_visibility="always"),
            ),
        ]

    def __str__(self) -> str:
        return self.question


class OptionQuerySet(_DeleteLockingOptions):
    poll_ids_field = "poll_id"


class Option(models.Model):
    poll = models.ForeignKey(Poll, on_delete=models.CASCADE, related_name="options")
    # 1-based, as the seed's API numbers options ("option": 1 is option1).
    position = models.PositiveSmallIntegerField()
    text = models.CharField(max_length=200)
    # Written only by the vote batch code, with one F() UPDATE per option per batch;
    # always equal to the number of this option's Vote rows.
    votes = models.BigIntegerField(default=0, editable=False)

    objects = OptionQuerySet.as_manager()

    class Meta:
        ordering = ["poll_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["poll", "position"], name="option_unique_position"),
            models.CheckConstraint(condition=models.Q(position__gte=1), name="option_position_from_1"),
        ]
        indexes = [
            # The leaderboard ranks options across all polls by their counter.
            models.Index(fields=["-votes", "poll", "position"], name="option_rank_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.position}. {self.text}"


def options_lock_for_delete(using: str | None = None, **poll_filter) -> None:
    """Lock the options of the polls `poll_filter` selects for the deleting transaction, in id order.

    The vote rows have no foreign key (migration 0004); the worker's batch locks the
    options of its polls in id order instead (polls.domain.services._options_lock) and inserts
    rows only for options it found. Django's cascade deletes the vote rows before the
    options, so without this lock a batch holding the options could commit rows after
    the cascade had read the table, for options deleted a moment later. With it the
    deletion waits for such a batch and its cascade sees the batch's rows; a batch that
    comes later waits for the deletion and finds no options (its votes go to the
    dead-letter topic). Call it inside the deletion's transaction before any row is
    deleted, for all the deletion's polls at once: id order is the batches' order, and
    two transactions that take the same rows in the same order cannot deadlock. (SQLite,
    which locks the whole database for a writing transaction, ignores FOR UPDATE.)
    """
    options = Option.objects.using(using).filter(**poll_filter).order_by("id")
    list(options.select_for_update().values_list("id", flat=True))


class Vote(models.Model):
    """One chosen option of one ballot. A single-choice ballot is one row."""

    # Generated before the vote enters Kafka (from the ballot id and the option), so a
    # redelivered message collides on this key and is ignored instead of counted again.
    vote_id = models.UUIDField(unique=True)
    # The ballot this choice belongs to: the event's vote_id. Not indexed: no query looks
    # a ballot up by it (the admin's exact search ORs it with a substring match, which
    # reads the table anyway), and every index costs each inserted row.
    ballot_id = models.UUIDField()
    # No index of its own: (poll, dedupe_key) and (poll, voter_key) start with poll_id.
    # No foreign key on PostgreSQL (migration 0004): the worker inserts a row only with
    # an option of the row's poll that it read and locked in the same transaction, and
    # a deletion locks those options first (polls.signals), which is what a key's check
    # on every row made sure of, at a third of the database's time per row.
    poll = models.ForeignKey(Poll, on_delete=models.CASCADE, related_name="votes", db_index=False, db_constraint=False)
    option = models.ForeignKey(Option, on_delete=models.CASCADE, related_name="vote_rows", db_constraint=False)
    voter_key = models.CharField(max_length=128, blank=True)
    # Set on the first row of a ballot when the poll allows one vote per voter or user;
    # the unique constraint, not a check-then-insert, makes a second ballot impossible.
    # NULL, not "": rows without a key never collide in that constraint.
    dedupe_key = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001
    cast_at = models.DateTimeField()
    applied_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["poll", "dedupe_key"], name="vote_one_ballot_per_voter"),
        ]
        indexes = [
            # "Has this viewer voted?", for results shown only after voting.
            models.Index(fields=["poll", "voter_key"], name="vote_poll_voter_idx"),
        ]

    def __str__(self) -> str:
        return f"vote {self.vote_id} for option {self.option_id}"


class AuditEntry(models.Model):
    """Who did what to a poll, when: moderators' closes, reopens, hides and exports."""

    class Action(models.TextChoices):
        CLOSE = "close", "Closed"
        REOPEN = "reopen", "Reopened"
        HIDE = "hide", "Hidden"
        UNHIDE = "unhide", "Unhidden"
        EXPORT = "export", "Exported"

    poll = models.ForeignKey(Poll, on_delete=models.CASCADE, related_name="audit_entries")
    action = models.CharField(max_length=16, choices=Action.choices)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    at = models.DateTimeField(auto_now_add=True)
    note = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.get_action_display()} poll {self.poll_id} by {self.actor or 'system'}"


def poll_total_reset(using: str | None = None, **poll_filter) -> None:
    """Set the total of the polls `poll_filter` selects to the sum of their options' counters."""
    sums = Option.objects.filter(poll=models.OuterRef("pk")).order_by().values("poll").annotate(s=models.Sum("votes"))
    Poll.objects.using(using).filter(**poll_filter).update(total=Coalesce(models.Subquery(sums.values("s")), 0))
