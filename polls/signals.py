"""Receivers: a deletion waits for the batches applying to its poll, and a saved or
deleted poll or option is forgotten by the vote target cache."""

from __future__ import annotations

from django.db.models import QuerySet
from django.db.models.signals import post_delete, post_save, pre_delete
from django.dispatch import receiver

from polls.models import Option, Poll
from polls.selectors import vote_target_forget


def _options_lock_for_delete(poll_id: int) -> None:
    """Lock the poll's options for the deleting transaction, in id order.

    The vote rows have no foreign key (migration 0004); the worker's batch locks the
    options of its polls in id order instead (polls.services._options_lock) and inserts
    rows only for options it found. Django's cascade deletes the vote rows before the
    options, so without this lock a batch holding the options could commit rows after
    the cascade had read the table, for options deleted a moment later. With it the
    deletion waits for such a batch and its cascade sees the batch's rows; a batch that
    comes later waits for the deletion and finds no options (its votes go to the
    dead-letter topic). pre_delete runs inside the deletion's transaction, before any
    row is deleted. Id order, the batches' order, for every option of the poll at once:
    the cascade visits options in no particular order. Polls deleted together are locked
    one by one in the cascade's order, so a batch spanning two of them may deadlock with
    the deletion, as it could with the foreign key before; PostgreSQL aborts one of the
    two, and the worker retries its batch. (SQLite, which locks the whole database for a
    writing transaction, ignores FOR UPDATE.)
    """
    list(Option.objects.filter(poll_id=poll_id).order_by("id").select_for_update().values_list("id", flat=True))


@receiver(pre_delete, sender=Poll, dispatch_uid="polls.delete_lock.poll")
def _poll_deleting(sender, instance: Poll, **kwargs) -> None:
    _options_lock_for_delete(instance.pk)


@receiver(pre_delete, sender=Option, dispatch_uid="polls.delete_lock.option")
def _option_deleting(sender, instance: Option, origin=None, **kwargs) -> None:
    # A poll's deletion cascades to its options, whose signals come first: the poll's own
    # receiver locks them all with one statement before any row is deleted.
    if isinstance(origin, Poll) or (isinstance(origin, QuerySet) and origin.model is Poll):
        return
    _options_lock_for_delete(instance.poll_id)


@receiver([post_save, post_delete], sender=Poll, dispatch_uid="polls.vote_target.poll")
def _poll_changed(sender, instance: Poll, **kwargs) -> None:
    vote_target_forget(instance.pk)


@receiver([post_save, post_delete], sender=Option, dispatch_uid="polls.vote_target.option")
def _option_changed(sender, instance: Option, **kwargs) -> None:
    vote_target_forget(instance.poll_id)
