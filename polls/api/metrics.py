"""What the vote endpoint answered, counted in polling.metrics' vote intake counters.

Both vote paths count through here: the DRF view (VoteIntakeMetricsMixin) and the lean
path (polls.api.vote_intake).
"""

from __future__ import annotations

import re

from django.http import Http404
from rest_framework.exceptions import APIException

from polling.metrics import vote_accepted, vote_rejected, vote_unavailable
from polls.domain.exceptions import PollError
from polls.kafka.errors import VoteBusUnavailable


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def vote_rejection_reason(exc: BaseException) -> str | None:
    """The reason label for an exception that made the vote endpoint answer 4xx.

    Domain errors (polls.domain.exceptions.PollError) are named after their class
    (PollClosed -> "poll_closed"); DRF's errors by their default code ("invalid",
    "parse_error", "unsupported_media_type", "throttled", ...). None for anything
    that is not a rejection: the vote bus being down (a 503) or a server error.
    """
    if isinstance(exc, VoteBusUnavailable):
        return None
    if isinstance(exc, PollError):
        return exc.reason or _snake(type(exc).__name__)
    if isinstance(exc, Http404):
        return "not_found"
    if isinstance(exc, APIException) and 400 <= exc.status_code < 500:
        return str(exc.default_code)
    return None


def vote_refused(exc: BaseException) -> None:
    """Count a vote answered with an error: 503 (the vote bus), or a rejection by reason."""
    if isinstance(exc, VoteBusUnavailable):
        vote_unavailable()
    else:
        reason = vote_rejection_reason(exc)
        if reason is not None:
            vote_rejected(reason)


class VoteIntakeMetricsMixin:
    """Counts what a DRF vote view answered: accepted (2xx), rejected (4xx by reason), 503.

    Put it first among the view's bases. It uses APIView's own hooks:
    ``handle_exception`` sees every error, throttling and parsing included, and
    ``finalize_response`` every answer.
    """

    def handle_exception(self, exc):
        vote_refused(exc)
        return super().handle_exception(exc)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if 200 <= response.status_code < 300:
            vote_accepted()
        return response
