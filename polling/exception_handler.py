"""One place that turns domain errors into HTTP answers in DRF's JSON shape."""

from __future__ import annotations

from django.conf import settings
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from polls.exceptions import OptionOutOfRange, PollClosed, PollNotFound, VoteBusUnavailable


def api_exception_handler(exc, context):
    if isinstance(exc, PollNotFound):
        return Response({"detail": str(exc)}, status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, OptionOutOfRange):
        # Shaped like a serializer error, since it is one: the option field is wrong.
        return Response({"option": [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, PollClosed):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, VoteBusUnavailable):
        return Response(
            {"detail": "The vote was not recorded: the vote log is unavailable. Retry later."},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(settings.VOTE_RETRY_AFTER)},
        )
    return exception_handler(exc, context)
