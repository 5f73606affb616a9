"""Domain errors raised by the services; polling.exception_handler maps them to HTTP.

They subclass polling.errors' bases and say there, as class attributes, how they are
answered, so the handler knows no app.
"""

from polling.errors import ApplicationError, ServiceUnavailable


class PollError(ApplicationError):
    """Base of the errors a client can cause and be told about.

    `status` is the HTTP status the API and the pages answer it with: 400 for a request
    the OpenAPI schema already refuses, 409 for a well-formed one that this poll, as it
    is, cannot take (schema-valid requests are never answered 400).
    """

    status = 400


class PollNotFound(PollError):
    status = 404

    def __init__(self, poll_id: int) -> None:
        super().__init__(f"No poll with id {poll_id}.")


class PollClosed(PollError):
    status = 409

    def __init__(self, poll_id: int) -> None:
        super().__init__(f"Poll {poll_id} is closed to votes.")


class OptionOutOfRange(PollError):
    status = 409
    field = "option"

    def __init__(self, option: int, count: int) -> None:
        self.option = option
        super().__init__(f"Option {option} does not exist: this poll has options 1 to {count}.")


class InvalidPoll(PollError):
    """A question or options a poll cannot have; `field` names the one at fault.

    400 where the schema states the rule (the number of options); 409 (`schema_valid`)
    for the text rules it cannot state: invisible-only text, options that look the same.
    """

    def __init__(self, field: str, message: str, *, schema_valid: bool = False) -> None:
        self.field = field
        self.status = 409 if schema_valid else 400
        super().__init__(message)


class InvalidChoices(PollError):
    """A ballot with the same option twice."""

    field = "options"


class TooManyChoices(InvalidChoices):
    """A ballot with more choices than the poll's max_choices."""

    status = 409


class AlreadyVoted(PollError):
    status = 409

    def __init__(self, poll_id: int) -> None:
        super().__init__(f"You have already voted in poll {poll_id}: it takes one vote per voter.")


class SignInRequired(PollError):
    status = 401
    www_authenticate = "Token"

    def __init__(self, what: str) -> None:
        super().__init__(f"Sign in to {what}.")


class BallotInvalid(PollError):
    """A vote's body (or Idempotency-Key) that is not a ballot: `errors` names each wrong field."""

    reason = "invalid"

    def __init__(self, errors: dict) -> None:
        self.errors = errors
        super().__init__(str(errors))


class BodyUnreadable(PollError):
    """A body that is not JSON in the charset it names."""

    reason = "parse_error"


class MediaTypeUnsupported(PollError):
    status = 415
    reason = "unsupported_media_type"

    def __init__(self, media_type: str) -> None:
        super().__init__(f'Unsupported media type "{media_type}" in request.')


class IdempotencyKeyReused(PollError):
    status = 409

    def __init__(self) -> None:
        super().__init__(
            "This Idempotency-Key was already used with a different request (another choice of options): "
            "send the same request to retry it, or a new key for a new vote."
        )


class IdempotencyKeyInUse(PollError):
    status = 409
    retry_after = True

    def __init__(self) -> None:
        super().__init__("A request with this Idempotency-Key is still being processed: retry later.")


class IdempotencyUnavailable(ServiceUnavailable):
    """The Idempotency-Key could not be checked (the cache is down); nothing was published."""

    detail = "The vote was not recorded: its Idempotency-Key cannot be checked now. Retry later."
    # Not skipped: without the check, a retry could be counted twice.
    log_message = "Idempotency-Key not checked, the cache is unavailable: %s"


class PollMismatch(PollError):
    """A vote whose body names another poll than its path."""

    status = 409
    field = "poll_id"

    def __init__(self, body_poll_id: int, path_poll_id: int) -> None:
        super().__init__(f"Does not match the poll in the path: {body_poll_id} != {path_poll_id}.")
