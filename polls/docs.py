"""Shapes and examples for the OpenAPI schema (drf-spectacular).

The views answer dictionaries built by the selectors; these serializers only describe
them, so the schema says what clients get.
"""

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What is wrong.")


# A 400 names each wrong field with its messages ({"option": ["..."]}), or gives a
# "detail" for a body that is not JSON at all: any object.
VALIDATION_ERROR = OpenApiResponse(
    response=OpenApiTypes.OBJECT,
    description='The request is invalid: {"<field>": ["<message>", ...]} or {"detail": "<message>"}.',
    examples=[OpenApiExample("A wrong field", value={"option": ["Option 5 does not exist: this poll has options 1 to 4."]})],
)


class OptionTotalsSerializer(serializers.Serializer):
    position = serializers.IntegerField(min_value=1)
    text = serializers.CharField()
    count = serializers.IntegerField(allow_null=True, help_text="Null while the results are hidden from this viewer.")


class PollSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    question = serializers.CharField()
    options = OptionTotalsSerializer(many=True)
    total = serializers.IntegerField(allow_null=True)
    status = serializers.ChoiceField(choices=["open", "closed"])
    closes_at = serializers.DateTimeField(allow_null=True)
    results_visibility = serializers.ChoiceField(choices=["always", "after_vote", "after_close"])
    results_hidden = serializers.BooleanField()
    one_vote_per = serializers.ChoiceField(choices=["none", "voter", "user"])
    max_choices = serializers.IntegerField(min_value=1)
    version = serializers.IntegerField(
        help_text="Never goes down: grows with every applied batch of votes, and while the counts are held "
        "back (results_hidden) only with the poll's other changes (status, hiding)."
    )
    created_at = serializers.DateTimeField()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for position in range(1, settings.POLL_MAX_OPTIONS + 1):
            self.fields[f"option{position}"] = serializers.IntegerField(
                required=position <= 2, allow_null=True, help_text=f"Votes for option {position} (the seed's shape)."
            )


class PollPageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = PollSerializer(many=True)


_POLL = {
    "id": 1,
    "question": "What is your favorite color?",
    "option1": 5,
    "option2": 3,
    "option3": 8,
    "option4": 2,
    "options": [
        {"position": 1, "text": "Red", "count": 5},
        {"position": 2, "text": "Blue", "count": 3},
        {"position": 3, "text": "Green", "count": 8},
        {"position": 4, "text": "Yellow", "count": 2},
    ],
    "total": 18,
    "status": "open",
    "closes_at": None,
    "results_visibility": "always",
    "results_hidden": False,
    "one_vote_per": "none",
    "max_choices": 1,
    "version": 7,
    "created_at": "2026-11-25T16:00:00+00:00",
}

POLL_EXAMPLE = OpenApiExample("A poll with its counts", value=_POLL, response_only=True)
POLL_PAGE_EXAMPLE = OpenApiExample(
    "A page of polls", value={"count": 1, "next": None, "previous": None, "results": [_POLL]}, response_only=True
)
SEED_CREATE_EXAMPLE = OpenApiExample(
    "The seed's body",
    value={"question": "What is your favorite color?", "option1": "Red", "option2": "Blue", "option3": "Green", "option4": "Yellow"},
    request_only=True,
)
LIST_CREATE_EXAMPLE = OpenApiExample(
    "Options as a list, multiple choice, one vote per voter",
    value={
        "question": "Which talks will you attend?",
        "options": ["Kafka", "Channels", "PostgreSQL", "Redis", "Django"],
        "max_choices": 2,
        "one_vote_per": "voter",
        "results_visibility": "after_vote",
        "closes_at": "2030-01-01T18:00:00Z",
    },
    request_only=True,
)
VOTE_EXAMPLE = OpenApiExample("The seed's vote", value={"poll_id": 1, "option": 3}, request_only=True)
MULTI_VOTE_EXAMPLE = OpenApiExample("A multiple-choice ballot", value={"options": [1, 4]}, request_only=True)
LEADERBOARD_EXAMPLE = OpenApiExample(
    "Options ranked across polls",
    value={
        "leaderboard": [
            {"option": "Green", "count": 10, "poll_id": 1, "position": 3, "question": "What is your favorite color?"},
            {"option": "Red", "count": 8, "poll_id": 1, "position": 1, "question": "What is your favorite color?"},
        ]
    },
    response_only=True,
)


IDEMPOTENCY_KEY = (
    "1 to 200 characters, a UUID is best (or `vote_id` in the body). Scoped to the poll and the voter: the "
    "signed-in user, else the voter token, else the client's address. The same key with the same choice is "
    "answered as the first time (204) and counted once; with another choice it is 422; while the first "
    "request is in progress, 409. A first request refused with a 4xx leaves the key free; after a 503 only "
    "the same choice may retry. Kept IDEMPOTENCY_KEY_TTL (24 h) in the cache, then checked against the stored ballot."
)


# The vote's body as the schema shows it; polls.ballots reads and checks it.
class VoteSerializer(serializers.Serializer):
    option = serializers.IntegerField(required=False)
    options = serializers.ListField(child=serializers.IntegerField(), required=False, min_length=1, max_length=100)
    poll_id = serializers.IntegerField(required=False)
    vote_id = serializers.UUIDField(required=False)


# The vote's operation (`POST /polls/{id}/vote`), as extend_schema's arguments.
VOTE_OPERATION = dict(
    operation_id="polls_vote",
    description=(
        "Casts a ballot: `option` (the seed's one choice) or `options` (a multiple-choice ballot). "
        "Answered 204 once the vote is durable in the vote log; a client without a voter token "
        "gets one in the `voter` cookie with its first vote."
    ),
    request=VoteSerializer,
    parameters=[
        OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, description=IDEMPOTENCY_KEY),
        OpenApiParameter("X-Voter-Token", str, OpenApiParameter.HEADER, description="An anonymous voter token from POST /voters."),
    ],
    responses={
        204: OpenApiResponse(description="The vote is durable and will be counted."),
        400: VALIDATION_ERROR,
        401: ErrorSerializer,
        404: ErrorSerializer,
        409: OpenApiResponse(
            ErrorSerializer,
            description="The poll is closed, this voter already voted in a one-vote poll, or a request "
            "with the same Idempotency-Key is still being processed (retry after Retry-After).",
        ),
        411: ErrorSerializer,
        413: ErrorSerializer,
        415: ErrorSerializer,
        422: OpenApiResponse(ErrorSerializer, description="The Idempotency-Key was already used with another choice of options."),
        429: ErrorSerializer,
        503: OpenApiResponse(
            ErrorSerializer,
            description="Not recorded (the vote log, the database, or for a keyed vote the key's store, is "
            "unavailable): retry after Retry-After with the same Idempotency-Key.",
        ),
    },
    examples=[VOTE_EXAMPLE, MULTI_VOTE_EXAMPLE],
)
