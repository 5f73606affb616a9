"""The errors the exception handler answers without knowing any app.

An app's errors subclass these and say, as class attributes, how they are answered;
polling.exception_handler turns them into responses.
"""

from __future__ import annotations


class ApplicationError(Exception):
    """An error the client caused and is told about, with a 4xx status.

    The body is `errors` when set (one entry per wrong field), else `{field: [message]}`
    when the error is about one request field (shaped like a serializer's error), else
    `{"detail": message}`.
    """

    status = 400
    # The reason label of polling_votes_rejected; None: named after the class.
    reason: str | None = None
    field: str | None = None
    errors: dict | None = None
    # The WWW-Authenticate scheme of a 401.
    www_authenticate: str | None = None
    # Answered with Retry-After (VOTE_RETRY_AFTER seconds): the same request may succeed later.
    retry_after = False


class ServiceUnavailable(Exception):
    """A service the request needs is down: 503 with Retry-After, and nothing was done."""

    detail = "The service is unavailable. Retry later."
    # When set, a warning logged with the error (%s is the error).
    log_message: str | None = None
