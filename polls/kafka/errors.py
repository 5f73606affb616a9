"""Errors of the Kafka side: a vote the bus could not make durable, a message that is no vote."""

from polling.errors import ServiceUnavailable


class VoteBusUnavailable(ServiceUnavailable):
    """The vote could not be made durable in time; nothing was accepted."""

    detail = "The vote was not recorded: the vote log is unavailable. Retry later."


class MalformedVoteEvent(ValueError):
    """A message in the vote topic that cannot be applied; it goes to the dead-letter topic."""
