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
    examples=[
        OpenApiExample("A wrong field", value={"option": ["Option 5 does not exist: this poll has options 1 to 4."]})
    ],
)


# A 409 is a well-formed request that the poll, as it is, cannot take: {"detail": "..."},
# or the field it is about ({"option": ["Option 5 does not exist: ..."]}).
CONFLICT = OpenApiResponse(
    response=OpenApiTypes.OBJECT,
    description='The poll cannot take this vote: {"detail": "<message>"} or {"<field>": ["<message>"]}.',
    examples=[OpenApiExample("Closed", value={"detail": "Poll 1 is closed to votes."})],
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
    value={
        "question": "What is your favorite color?",
        "option1": "Red",
        "option2": "Blue",
        "option3": "Green",
        "option4": "Yellow",
    },
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
    "answered as the first time (204) and counted once; with another choice it is 409 (the key was used "
    "for another request); while the first "
    "request is in progress, 409. A first request refused with a 4xx leaves the key free; after a 503 only "
    "the same choice may retry. Kept IDEMPOTENCY_KEY_TTL (24 h) in the cache, then checked against the stored ballot."
)


# --- Request bodies as the server takes them ---------------------------------------------
# drf-spectacular describes each serializer field on its own; the rules that tie fields
# together (option1..optionN consecutive, options as a list or numbered, option or
# options) are written here, so that every body the schema allows is one the server
# accepts (schemathesis's positive_data_acceptance, tests/test_api_fuzz.py) and every
# body it refuses is refused.

# A string the server keeps: not blank once trimmed, no NUL (PostgreSQL cannot store it).
_TEXT_PATTERN = r"^[^\u0000]*\S[^\u0000]*$"
_NULL = {"nullable": True, "enum": [None], "description": "Null: the same as leaving it out."}


def _text(max_length: int) -> dict:
    return {"type": "string", "minLength": 1, "maxLength": max_length, "pattern": _TEXT_PATTERN}


def create_poll_request() -> dict:
    """POST /polls: the question and options numbered option1..optionN (the seed's shape), or a list."""
    most = settings.POLL_MAX_OPTIONS
    common = {
        "question": _text(500),
        "closes_at": {
            "type": "string",
            "format": "date-time",
            "nullable": True,
            "description": "Votes are refused from then on; a moment already past creates a closed poll.",
        },
        "results_visibility": {"type": "string", "enum": ["always", "after_vote", "after_close"], "default": "always"},
        "one_vote_per": {"type": "string", "enum": ["none", "voter", "user"], "default": "none"},
        "max_choices": {
            "type": "integer",
            "minimum": 1,
            "default": 1,
            "description": "Options a ballot may choose; more than the poll has means all of them.",
        },
    }
    numbered = [
        {
            "title": f"{count} options as option1..option{count}",
            "properties": {
                "options": {"type": "array", "maxItems": 0, "description": "Empty, if given."},
                **{f"option{n}": _text(200) if n <= count else _NULL for n in range(1, most + 1)},
            },
            "required": [f"option{n}" for n in range(1, count + 1)],
        }
        for count in range(2, most + 1)
    ]
    listed = {
        "title": "Options as a list",
        "properties": {
            "options": {"type": "array", "minItems": 2, "maxItems": most, "items": _text(200)},
            **{f"option{n}": _NULL for n in range(1, most + 1)},
        },
        "required": ["options"],
    }
    return {
        "type": "object",
        "properties": {
            **common,
            "options": {"type": "array", "items": _text(200)},
            **{f"option{n}": {**_text(200), "nullable": True} for n in range(1, most + 1)},
        },
        "required": ["question"],
        "oneOf": [*numbered, listed],
    }


def vote_request() -> dict:
    """POST /polls/{id}/vote: one option, or a list of distinct options."""
    option = {"type": "integer", "description": "1-based; one the poll has (409 otherwise)."}
    options = {
        "type": "array",
        "items": {"type": "integer"},
        "minItems": 1,
        "maxItems": 100,
        "uniqueItems": True,
        "description": "A multiple-choice ballot: at most the poll's max_choices (409 otherwise).",
    }
    return {
        "type": "object",
        "properties": {
            "option": {**option, "nullable": True},
            "options": {**options, "nullable": True},
            "poll_id": {"type": "integer", "description": "The poll of the path, if given (409 otherwise)."},
            "vote_id": {"type": "string", "format": "uuid", "description": "Retries with the same id count once."},
        },
        # One of the two, the other left out or null.
        "oneOf": [
            {"title": "One choice", "required": ["option"], "properties": {"option": option, "options": _NULL}},
            {"title": "Several choices", "required": ["options"], "properties": {"options": options, "option": _NULL}},
        ],
    }


def strict_request_bodies(result, generator, request, public):
    """drf-spectacular post-processing hook: the request bodies above, required."""
    schemas = result.get("components", {}).get("schemas", {})
    bodies = {"polls_create": ("CreateInputRequest", create_poll_request), "polls_vote": ("VoteRequest", vote_request)}
    for path in result.get("paths", {}).values():
        for operation in path.values():
            if not isinstance(operation, dict) or "requestBody" not in operation:
                continue
            named = bodies.get(operation.get("operationId"))
            if named:
                schemas[named[0]] = named[1]()
            if named or operation.get("operationId") == "voters_create":
                # POST /voters too: a JSON body (any) is what tells it from a cross-site form.
                operation["requestBody"]["required"] = True
    return result


# The vote's body as the schema shows it; polls.domain.ballots reads and checks it.
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
        OpenApiParameter(
            "Idempotency-Key",
            {"type": "string", "minLength": 1, "maxLength": 200},
            OpenApiParameter.HEADER,
            description=IDEMPOTENCY_KEY,
        ),
        OpenApiParameter(
            "X-Voter-Token", str, OpenApiParameter.HEADER, description="An anonymous voter token from POST /voters."
        ),
    ],
    responses={
        204: OpenApiResponse(description="The vote is durable and will be counted."),
        400: VALIDATION_ERROR,
        401: ErrorSerializer,
        404: ErrorSerializer,
        409: CONFLICT,
        411: ErrorSerializer,
        413: ErrorSerializer,
        415: ErrorSerializer,
        429: ErrorSerializer,
        503: OpenApiResponse(
            ErrorSerializer,
            description="Not recorded (the vote log, the database, or for a keyed vote the key's store, is "
            "unavailable): retry after Retry-After with the same Idempotency-Key.",
        ),
    },
    examples=[VOTE_EXAMPLE, MULTI_VOTE_EXAMPLE],
)
