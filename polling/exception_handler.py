"""One place that turns domain errors into HTTP answers in DRF's JSON shape."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import InterfaceError, OperationalError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from polls.exceptions import (
    AlreadyVoted,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    IdempotencyUnavailable,
    InvalidChoices,
    InvalidPoll,
    OptionOutOfRange,
    PollClosed,
    PollNotFound,
    SignInRequired,
    VoteBusUnavailable,
)
from polls.voters import InvalidVoterToken

logger = logging.getLogger(__name__)


def api_exception_handler(exc, context):
    if isinstance(exc, PollNotFound):
        return Response({"detail": str(exc)}, status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, OptionOutOfRange):
        # Shaped like a serializer error, since it is one: the option field is wrong.
        return Response({"option": [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, InvalidPoll):
        return Response({exc.field: [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, InvalidChoices):
        return Response({"options": [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, InvalidVoterToken):
        return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, (PollClosed, AlreadyVoted)):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, IdempotencyKeyReused):
        return Response({"detail": str(exc)}, status=status.HTTP_422_UNPROCESSABLE_ENTITY)
    if isinstance(exc, IdempotencyKeyInUse):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT,
                        headers={"Retry-After": str(settings.VOTE_RETRY_AFTER)})
    if isinstance(exc, SignInRequired):
        return Response({"detail": str(exc)}, status=status.HTTP_401_UNAUTHORIZED, headers={"WWW-Authenticate": "Token"})
    if isinstance(exc, VoteBusUnavailable):
        return _unavailable("The vote was not recorded: the vote log is unavailable. Retry later.")
    if isinstance(exc, IdempotencyUnavailable):
        # Not skipped: without the check, a retry could be counted twice.
        logger.warning("Idempotency-Key not checked, the cache is unavailable: %s", exc)
        return _unavailable("The vote was not recorded: its Idempotency-Key cannot be checked now. Retry later.")
    if isinstance(exc, (OperationalError, InterfaceError)):
        # The database is unreachable (restarting, failing over): say so and when to retry,
        # rather than a bare 500. Nothing was published: validation needs the database.
        logger.warning("database unavailable: %s", exc)
        return _unavailable("The database is unavailable. Retry later.")
    return exception_handler(exc, context)


def _unavailable(detail: str) -> Response:
    return Response(
        {"detail": detail},
        status=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(settings.VOTE_RETRY_AFTER)},
    )
