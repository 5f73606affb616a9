"""One place that turns domain errors into HTTP answers in DRF's JSON shape."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import InterfaceError, OperationalError
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import exception_handler

from polls.exceptions import (
    AlreadyVoted,
    BallotInvalid,
    BodyUnreadable,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    IdempotencyUnavailable,
    InvalidChoices,
    InvalidPoll,
    MediaTypeUnsupported,
    OptionOutOfRange,
    PollClosed,
    PollNotFound,
    SignInRequired,
    VoteBusUnavailable,
)
from polls.voters import InvalidVoterToken

logger = logging.getLogger(__name__)


def api_exception_handler(exc, context):
    # DRF's own errors go to its handler, which also rolls back ATOMIC_REQUESTS.
    answer = None if isinstance(exc, APIException) else error_answer(exc)
    if answer is None:
        return exception_handler(exc, context)
    status_code, data, headers = answer
    return Response(data, status=status_code, headers=headers)


def error_answer(exc: BaseException) -> tuple[int, dict, dict[str, str]] | None:
    """(status, JSON body, headers) of the answer to a domain or DRF error; None: not one.

    The one mapping of errors to answers: the DRF views' exception handler and the
    vote's lean path (polls.vote_intake) both use it.
    """
    if isinstance(exc, PollNotFound):
        return status.HTTP_404_NOT_FOUND, {"detail": str(exc)}, {}
    if isinstance(exc, OptionOutOfRange):
        # Shaped like a serializer error, since it is one: the option field is wrong.
        return status.HTTP_400_BAD_REQUEST, {"option": [str(exc)]}, {}
    if isinstance(exc, InvalidPoll):
        return status.HTTP_400_BAD_REQUEST, {exc.field: [str(exc)]}, {}
    if isinstance(exc, InvalidChoices):
        return status.HTTP_400_BAD_REQUEST, {"options": [str(exc)]}, {}
    if isinstance(exc, BallotInvalid):
        return status.HTTP_400_BAD_REQUEST, exc.errors, {}
    if isinstance(exc, (InvalidVoterToken, BodyUnreadable)):
        return status.HTTP_400_BAD_REQUEST, {"detail": str(exc)}, {}
    if isinstance(exc, MediaTypeUnsupported):
        return status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, {"detail": str(exc)}, {}
    if isinstance(exc, (PollClosed, AlreadyVoted)):
        return status.HTTP_409_CONFLICT, {"detail": str(exc)}, {}
    if isinstance(exc, IdempotencyKeyReused):
        return status.HTTP_422_UNPROCESSABLE_ENTITY, {"detail": str(exc)}, {}
    if isinstance(exc, IdempotencyKeyInUse):
        return status.HTTP_409_CONFLICT, {"detail": str(exc)}, {"Retry-After": str(settings.VOTE_RETRY_AFTER)}
    if isinstance(exc, SignInRequired):
        return status.HTTP_401_UNAUTHORIZED, {"detail": str(exc)}, {"WWW-Authenticate": "Token"}
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
    if isinstance(exc, APIException):
        # As DRF's own handler answers them (the vote's lean path raises Throttled).
        headers = {}
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        data = exc.detail if isinstance(exc.detail, (list, dict)) else {"detail": exc.detail}
        return exc.status_code, data, headers
    return None


def _unavailable(detail: str) -> tuple[int, dict, dict[str, str]]:
    return status.HTTP_503_SERVICE_UNAVAILABLE, {"detail": detail}, {"Retry-After": str(settings.VOTE_RETRY_AFTER)}
