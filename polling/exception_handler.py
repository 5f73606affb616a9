"""One place that turns domain errors into HTTP answers in DRF's JSON shape."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import InterfaceError, OperationalError
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import exception_handler

from polls.domain.exceptions import (
    BallotInvalid,
    IdempotencyKeyInUse,
    IdempotencyUnavailable,
    InvalidChoices,
    InvalidPoll,
    OptionOutOfRange,
    PollError,
    PollMismatch,
    SignInRequired,
    TooManyChoices,
    VoteBusUnavailable,
)
from polls.domain.voters import InvalidVoterToken

logger = logging.getLogger(__name__)

_ERROR_FIELDS = {OptionOutOfRange: "option", InvalidChoices: "options", TooManyChoices: "options", PollMismatch: "poll_id"}


def api_exception_handler(exc, context):
    # DRF's own errors go to its handler, which also rolls back ATOMIC_REQUESTS.
    answer = None if isinstance(exc, APIException) else error_answer(exc)
    if answer is None:
        return exception_handler(exc, context)
    status_code, data, headers = answer
    return Response(data, status=status_code, headers=headers or None)


def error_answer(exc: BaseException) -> tuple[int, dict, dict[str, str]] | None:
    """(status, JSON body, headers) of the answer to a domain or DRF error; None: not one.

    The one mapping of errors to answers: the DRF views' exception handler and the
    vote's lean path (polls.api.vote_intake) both use it.
    """
    if isinstance(exc, PollError):
        if isinstance(exc, BallotInvalid):
            body = exc.errors
        else:
            # Shaped like a serializer error where it is one (the field named is wrong).
            field = exc.field if isinstance(exc, InvalidPoll) else _ERROR_FIELDS.get(type(exc))
            body = {field: [str(exc)]} if field else {"detail": str(exc)}
        # 401 names its scheme: an API token, or the X-Voter-Token header.
        scheme = {SignInRequired: "Token", InvalidVoterToken: "Voter-Token"}.get(type(exc))
        headers = {"WWW-Authenticate": scheme} if scheme else {}
        if isinstance(exc, IdempotencyKeyInUse):
            headers["Retry-After"] = str(settings.VOTE_RETRY_AFTER)
        return exc.status, body, headers
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
