"""REST endpoints of polls: thin views that validate, call one service, serialize."""

from __future__ import annotations

import hashlib

from django.conf import settings
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from polls.selectors import poll_get, poll_totals
from polls.services import poll_create, vote_cast


class StrictIntegerField(serializers.IntegerField):
    """An integer that must be a JSON number: "1", 1.0 and true are refused, not coerced."""

    def to_internal_value(self, data):
        if type(data) is not int:
            self.fail("invalid")
        return super().to_internal_value(data)


class PollCreateApi(APIView):
    class InputSerializer(serializers.Serializer):
        question = serializers.CharField(max_length=500)

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            for position in range(1, settings.POLL_MAX_OPTIONS + 1):
                self.fields[f"option{position}"] = serializers.CharField(
                    max_length=200, required=False, allow_null=True
                )

        def validate(self, attrs):
            given = [(position, attrs.get(f"option{position}")) for position in range(1, settings.POLL_MAX_OPTIONS + 1)]
            options = [text for _, text in given if text is not None]
            if len(options) < 2:
                raise serializers.ValidationError({"options": ["A poll needs at least 2 options: give option1 and option2."]})
            first_missing = next((position for position, text in given if text is None), None)
            if first_missing is not None and first_missing <= len(options):
                raise serializers.ValidationError(
                    {f"option{first_missing}": [f"Options must be consecutive from option1: option{first_missing} is missing."]}
                )
            if len({text.casefold() for text in options}) != len(options):
                raise serializers.ValidationError({"options": ["Options must differ from one another."]})
            return {"question": attrs["question"], "options": options}

    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        poll = poll_create(**serializer.validated_data)
        return Response(poll_totals(poll=poll_get(poll_id=poll.pk)), status=status.HTTP_201_CREATED)


class PollDetailApi(APIView):
    def get(self, request: Request, poll_id: int) -> Response:
        return Response(poll_totals(poll=poll_get(poll_id=poll_id)))


class PollVoteApi(APIView):
    class InputSerializer(serializers.Serializer):
        option = StrictIntegerField()
        poll_id = StrictIntegerField(required=False)

    def post(self, request: Request, poll_id: int) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        body_poll_id = serializer.validated_data.get("poll_id")
        if body_poll_id is not None and body_poll_id != poll_id:
            raise serializers.ValidationError(
                {"poll_id": [f"Does not match the poll in the path: {body_poll_id} != {poll_id}."]}
            )
        vote_cast(poll_id=poll_id, option=serializer.validated_data["option"], voter_key=voter_key(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


def voter_key(request: Request) -> str:
    """Who cast a vote, as far as the seed's anonymous API can tell.

    A hash, not the address itself: enough to see a flood from one client in the vote
    history without keeping voters' IP addresses.
    """
    address = request.META.get("REMOTE_ADDR") or "unknown"
    digest = hashlib.sha256(f"{settings.SECRET_KEY}:{address}".encode()).hexdigest()[:16]
    return f"ip:{digest}"
