"""One place that turns errors into HTTP answers in DRF's JSON shape, knowing no app (polling.errors)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import InterfaceError, OperationalError
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import exception_handler

from polling.errors import ApplicationError, ServiceUnavailable

logger = logging.getLogger(__name__)


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
    if isinstance(exc, ApplicationError):
        body = exc.errors
        if body is None:
            # Shaped like a serializer error where it is one (the field named is wrong).
            body = {exc.field: [str(exc)]} if exc.field else {"detail": str(exc)}
        headers = {"WWW-Authenticate": exc.www_authenticate} if exc.www_authenticate else {}
        if exc.retry_after:
            headers["Retry-After"] = str(settings.VOTE_RETRY_AFTER)
        return exc.status, body, headers
    if isinstance(exc, ServiceUnavailable):
        if exc.log_message:
            # For operators: the client hears only that the service is unavailable.
            logger.warning(exc.log_message, exc)
        return _unavailable(exc.detail)
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
