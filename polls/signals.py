"""Receivers: a deletion waits for the batches applying to its poll (see
polls.models.options_lock_for_delete), a deleted option's votes leave its poll's total,
and a saved or deleted poll or option is forgotten by the vote target cache."""

from __future__ import annotations

from django.db.models import QuerySet
from django.db.models.signals import post_delete, post_save, pre_delete
from django.dispatch import receiver

from polls.domain.selectors import vote_target_forget
from polls.models import Option, OptionQuerySet, Poll, PollQuerySet, options_lock_for_delete, poll_total_reset


@receiver(pre_delete, sender=Poll, dispatch_uid="polls.delete_lock.poll")
def _poll_deleting(sender, instance: Poll, using=None, origin=None, **kwargs) -> None:
    # A bulk deletion (PollQuerySet.delete) locked the options of all its polls already.
    if isinstance(origin, PollQuerySet):
        return
    options_lock_for_delete(using, poll_id=instance.pk)


@receiver(pre_delete, sender=Option, dispatch_uid="polls.delete_lock.option")
def _option_deleting(sender, instance: Option, using=None, origin=None, **kwargs) -> None:
    # A poll's deletion cascades to its options, whose signals come first: the poll's own
    # receiver (or PollQuerySet.delete, for several polls) locks them all with one
    # statement before any row is deleted. OptionQuerySet.delete has locked its own.
    if isinstance(origin, (Poll, OptionQuerySet)) or (isinstance(origin, QuerySet) and origin.model is Poll):
        return
    options_lock_for_delete(using, poll_id=instance.poll_id)


@receiver(post_delete, sender=Option, dispatch_uid="polls.total.option")
def _option_deleted(sender, instance: Option, using=None, origin=None, **kwargs) -> None:
    # Its vote rows went with it: the poll's total is its remaining options' counters,
    # read in the deleting transaction, which holds their locks. Not when the poll goes too.
    if isinstance(origin, Poll) or (isinstance(origin, QuerySet) and origin.model is Poll):
        return
    poll_total_reset(using, pk=instance.poll_id)


@receiver([post_save, post_delete], sender=Poll, dispatch_uid="polls.vote_target.poll")
def _poll_changed(sender, instance: Poll, **kwargs) -> None:
    vote_target_forget(instance.pk)


@receiver([post_save, post_delete], sender=Option, dispatch_uid="polls.vote_target.option")
def _option_changed(sender, instance: Option, **kwargs) -> None:
    vote_target_forget(instance.poll_id)
