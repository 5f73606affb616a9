"""REST endpoints of polls: thin views that validate, call one service, serialize."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.http import HttpResponse
from django.utils.http import parse_header_parameters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.authentication import CSRFCheck
from rest_framework.exceptions import UnsupportedMediaType
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from polling.strict import StrictCharField, StrictIntegerField, query_data, validated_data
from polling.throttles import PipelinedThrottlesMixin
from polls.api import docs
from polls.api.exports import results_csv
from polls.api.metrics import VoteIntakeMetricsMixin
from polls.api.throttles import VOTE_THROTTLES, PollCreateRateThrottle, VoterTokenIssueRateThrottle
from polls.domain.ballots import ballot_read, idempotency_key
from polls.domain.selectors import (
    poll_closed_by_staff,
    poll_get,
    poll_list,
    poll_results_visible,
    poll_totals,
    polls_results_visible,
)
from polls.domain.services import poll_create, poll_set_status, vote_cast
from polls.domain.voters import (
    voter_cookie_set,
    voter_cookie_token,
    voter_for_vote,
    voter_from_request,
    voter_token_issue,
)
from polls.models import Poll


class CanCreatePolls(BasePermission):
    """Open to everyone, as the seed's API was, unless POLLS_CREATE_REQUIRES_AUTH is set."""

    message = "Sign in (session or token) to create polls."

    def has_permission(self, request, view):
        if request.method != "POST" or not settings.POLLS_CREATE_REQUIRES_AUTH:
            return True
        return bool(request.user and request.user.is_authenticated)


class CanModeratePoll(BasePermission):
    """Staff, or the signed-in user who created the poll; but a poll staff closed (for
    abuse, say) only staff may reopen."""

    message = "Only staff or the poll's creator may close or reopen it."

    def has_object_permission(self, request, view, poll):
        user = request.user
        if not (user and user.is_authenticated):
            return False
        if user.is_staff:
            return True
        if poll.created_by_id != user.pk:
            return False
        if getattr(view, "status_to_set", None) == Poll.Status.OPEN and poll_closed_by_staff(poll_id=poll.pk):
            self.message = "A moderator closed this poll: only staff may reopen it."
            return False
        return True


class PollsPagination(PageNumberPagination):
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100


class PollsApi(APIView):
    """`GET /polls` lists polls; `POST /polls` creates one (the seed's endpoint)."""

    # AllowAny beside the real rule tells the schema that reading needs no credentials.
    permission_classes = [AllowAny, CanCreatePolls]

    def get_throttles(self):
        return [PollCreateRateThrottle()] if self.request.method == "POST" else []

    class CreateInputSerializer(serializers.Serializer):
        question = StrictCharField(max_length=500)
        options = serializers.ListField(child=StrictCharField(max_length=200), required=False, allow_empty=True)
        closes_at = serializers.DateTimeField(required=False, allow_null=True)
        results_visibility = serializers.ChoiceField(choices=Poll.Visibility.choices, default=Poll.Visibility.ALWAYS)
        one_vote_per = serializers.ChoiceField(choices=Poll.OneVotePer.choices, default=Poll.OneVotePer.NONE)
        max_choices = StrictIntegerField(min_value=1, default=1)

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # The seed's shape: option1..optionN as separate fields.
            for position in range(1, settings.POLL_MAX_OPTIONS + 1):
                self.fields[f"option{position}"] = StrictCharField(max_length=200, required=False, allow_null=True)

        def validate(self, attrs):
            maximum = settings.POLL_MAX_OPTIONS
            given = [(position, attrs.pop(f"option{position}", None)) for position in range(1, maximum + 1)]
            numbered = [text for _, text in given if text is not None]
            listed = attrs.pop("options", None)
            if listed and numbered:
                raise serializers.ValidationError(
                    {"options": ["Give options either as a list or as option1..optionN, not both."]}
                )
            if listed is None or not listed:
                first_missing = next((position for position, text in given if text is None), None)
                if first_missing is not None and first_missing <= len(numbered):
                    raise serializers.ValidationError(
                        {
                            f"option{first_missing}": [
                                f"Options must be consecutive from option1: option{first_missing} is missing."
                            ]
                        }
                    )
                options = numbered
            else:
                options = listed
            # Their number and text: polls.domain.services.poll_options_clean. More choices than
            # options means any number of them; a deadline already past makes a closed poll.
            return {**attrs, "options": options, "max_choices": min(attrs["max_choices"], max(len(options), 1))}

    class ListFilterSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=Poll.Status.choices, required=False)
        search = serializers.CharField(
            max_length=200,
            required=False,
            allow_blank=True,
            help_text="Case-insensitive part of the question.",
            validators=[RegexValidator(r"^[^\x00]*$", "Null characters are not allowed.")],  # the schema's pattern
        )
        page = serializers.IntegerField(min_value=1, required=False)
        page_size = serializers.IntegerField(min_value=1, max_value=PollsPagination.max_page_size, required=False)
        ordering = serializers.ChoiceField(
            choices=["created_at", "-created_at", "total_votes", "-total_votes", "question", "-question"],
            default="-created_at",
            help_text="By total_votes, polls that hold their counts back from everyone come last.",
        )

    @extend_schema(
        operation_id="polls_list",
        parameters=[ListFilterSerializer],
        responses={200: docs.PollPageSerializer, 400: docs.VALIDATION_ERROR, 404: docs.ErrorSerializer},
        examples=[docs.POLL_PAGE_EXAMPLE],
    )
    def get(self, request: Request) -> Response:
        filters = validated_data(self.ListFilterSerializer(data=query_data(request)))
        paginator = PollsPagination()
        criteria = {k: v for k, v in filters.items() if k in ("status", "search", "ordering")}
        page = paginator.paginate_queryset(poll_list(**criteria), request, view=self)
        visible = polls_results_visible(polls=page, voter=voter_from_request(request))
        return paginator.get_paginated_response([poll_totals(poll=poll, visible=visible[poll.pk]) for poll in page])

    @extend_schema(
        operation_id="polls_create",
        request=CreateInputSerializer,
        responses={
            201: docs.PollSerializer,
            400: docs.VALIDATION_ERROR,
            401: docs.ErrorSerializer,
            409: OpenApiResponse(
                OpenApiTypes.OBJECT,
                description="Text the schema allows and a poll cannot have (options that look the same, text that "
                'shows nothing): {"<field>": ["<message>"]}.',
            ),
            429: docs.ErrorSerializer,
        },
        examples=[docs.SEED_CREATE_EXAMPLE, docs.LIST_CREATE_EXAMPLE, docs.POLL_EXAMPLE],
    )
    def post(self, request: Request) -> Response:
        data = validated_data(self.CreateInputSerializer(data=request.data))
        user = request.user if request.user and request.user.is_authenticated else None
        poll = poll_create(**data, created_by=user)
        return Response(poll_totals(poll=poll_get(poll_id=poll.pk)), status=status.HTTP_201_CREATED)


class PollDetailApi(APIView):
    @extend_schema(
        operation_id="polls_retrieve",
        responses={200: docs.PollSerializer, 404: docs.ErrorSerializer},
        examples=[docs.POLL_EXAMPLE],
    )
    def get(self, request: Request, poll_id: int) -> Response:
        return Response(_poll_as_seen(request, poll_id))


def _poll_as_seen(request: Request, poll_id: int) -> dict:
    """The poll as this caller may see it: counts it holds back from them are null."""
    poll = poll_get(poll_id=poll_id)
    return poll_totals(poll=poll, visible=poll_results_visible(poll=poll, voter=voter_from_request(request)))


class PollVoteApi(VoteIntakeMetricsMixin, PipelinedThrottlesMixin, APIView):
    """`POST /polls/{id}/vote` for requests that carry a signed-in user (and in-process
    clients): servers route the others to the lean path, polls.api.vote_intake, which
    reads the ballot and casts it with the same functions."""

    throttle_classes = list(VOTE_THROTTLES)

    @extend_schema(**docs.VOTE_OPERATION)
    def post(self, request: Request, poll_id: int) -> Response:
        ballot = ballot_read(body=request.body, content_type=request.content_type, poll_id=poll_id)
        voter, new_token = voter_for_vote(voter_from_request(request))
        key = idempotency_key(header=request.headers.get("Idempotency-Key"), ballot=ballot)
        event = vote_cast(poll_id=poll_id, options=ballot.options, voter=voter, idempotency_key=key)
        response = Response(status=status.HTTP_204_NO_CONTENT)
        if new_token is not None:
            voter_cookie_set(response, voter_cookie_token(event, new_token))
        return response


class PollStatusApi(APIView):
    """`POST /polls/{id}/close` and `/reopen`: staff or the poll's creator."""

    permission_classes = [CanModeratePoll]
    status_to_set: str = Poll.Status.CLOSED

    @extend_schema(
        request=None,
        responses={
            200: docs.PollSerializer,
            401: docs.ErrorSerializer,
            403: docs.ErrorSerializer,
            404: docs.ErrorSerializer,
        },
        description=(
            "Closes or reopens the poll and answers it as GET /polls/{id} shows it to the caller: counts "
            "the poll holds back from the caller are null, for its creator and staff too, also when nothing "
            "changed (closing a closed poll, reopening an open one). "
            "The server that answers refuses or accepts votes from then on; "
            "other server processes may go on answering votes as before for up to VOTE_TARGET_CACHE_SECONDS "
            "(1 s by default), and the votes they accept are counted."
        ),
    )
    def post(self, request: Request, poll_id: int) -> Response:
        poll = poll_get(poll_id=poll_id)
        self.check_object_permissions(request, poll)
        poll_set_status(poll=poll, status=self.status_to_set, actor=request.user)
        # As GET /polls/{id} shows it: moderating a poll is no way to read the counts it
        # holds back (an open after_close poll, reopened again and again).
        return Response(_poll_as_seen(request, poll.pk))


class PollExportApi(APIView):
    """`GET /polls/{id}/export.csv` and `/export.json`: the results, where they are visible."""

    export_format = "json"

    @extend_schema(
        responses={
            200: OpenApiResponse(description="The results, one row per option."),
            403: docs.ErrorSerializer,
            404: docs.ErrorSerializer,
        }
    )
    def get(self, request: Request, poll_id: int):
        poll = poll_get(poll_id=poll_id)
        if not poll_results_visible(poll=poll, voter=voter_from_request(request)):
            return Response(
                {"detail": "The results of this poll are not visible yet."}, status=status.HTTP_403_FORBIDDEN
            )
        totals = poll_totals(poll=poll)
        filename = f"poll-{poll.pk}-results.{self.export_format}"
        if self.export_format == "csv":
            response = HttpResponse(results_csv(totals), content_type="text/csv; charset=utf-8")
        else:
            response = Response(totals)
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response


class VoterTokenApi(PipelinedThrottlesMixin, APIView):
    """`POST /voters`: a new anonymous voter token, for one-vote-per-voter polls."""

    throttle_classes = [VoterTokenIssueRateThrottle]

    @extend_schema(
        request={"application/json": OpenApiTypes.ANY},
        responses={
            201: inline_serializer("VoterToken", {"voter_token": serializers.CharField()}),
            415: docs.ErrorSerializer,
            429: docs.ErrorSerializer,
        },
        examples=[OpenApiExample("A token", value={"voter_token": "kq3…:Xb1…"}, response_only=True)],
        description=(
            "Sent as Content-Type: application/json (the body is ignored and may be empty), or with "
            "Django's CSRF token (X-CSRFToken); anything else is 415, so that no page of another site "
            "can replace a browser's voter cookie."
        ),
    )
    def post(self, request: Request) -> Response:
        _require_json_or_csrf(request)
        _, signed = voter_token_issue()
        response = Response({"voter_token": signed}, status=status.HTTP_201_CREATED)
        voter_cookie_set(response, signed)
        return response


def _require_json_or_csrf(request: Request) -> None:
    """Refuse (415) what a page of another site can send without asking: an HTML form
    (urlencoded, multipart, text/plain) or a fetch with no Content-Type. A JSON body
    needs a CORS preflight that this server never grants; a valid CSRF token comes only
    from this site's own pages.
    """
    media_type, _ = parse_header_parameters(request.META.get("CONTENT_TYPE", ""))
    if media_type == "application/json":
        return
    check = CSRFCheck(lambda _request: None)
    check.process_request(request._request)  # sets the expected token from the cookie
    if check.process_view(request._request, None, (), {}) is None:
        return
    raise UnsupportedMediaType(
        media_type or "(none)",
        detail=(
            f"Send this request with Content-Type: application/json (not {media_type or 'none'}; the body may be "
            "empty), or with a CSRF token: a form of another site must not replace your voter cookie."
        ),
    )
