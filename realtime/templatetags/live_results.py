"""What the live results show before (or without) their script: each option's share."""

from django import template

register = template.Library()


@register.simple_tag
def share_of(count: int | None, total: int | None) -> float | None:
    """The option's share of the votes in percent; None while the counts are hidden."""
    if count is None:
        return None
    return 100 * count / total if total else 0.0
