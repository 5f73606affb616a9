"""Receivers: a saved or deleted poll or option is forgotten by the vote target cache."""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from polls.models import Option, Poll
from polls.selectors import vote_target_forget


@receiver([post_save, post_delete], sender=Poll, dispatch_uid="polls.vote_target.poll")
def _poll_changed(sender, instance: Poll, **kwargs) -> None:
    vote_target_forget(instance.pk)


@receiver([post_save, post_delete], sender=Option, dispatch_uid="polls.vote_target.option")
def _option_changed(sender, instance: Option, **kwargs) -> None:
    vote_target_forget(instance.poll_id)
