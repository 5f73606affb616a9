"""The audience's pages: home (open polls and a create form), vote, share, presenter, QR code.

Plain Django views over the same services as the API (poll_create, vote_cast) and the
same rate limits: a form POST works without JavaScript, and the results they show are
kept live by realtime/live.js. CSRF-protected by Django's middleware, like any form.
"""

from __future__ import annotations

import io
from datetime import timedelta
from math import ceil
from typing import Any

import segno
from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from polling.throttles import throttles_check
from polls.api.apis import PollsApi
from polls.api.throttles import PollCreateRateThrottle, vote_throttles_check
from polls.domain.exceptions import AlreadyVoted, InvalidPoll, PollError
from polls.domain.live import poll_totals_for_viewer
from polls.domain.selectors import poll_list, voter_has_voted
from polls.domain.services import poll_create, vote_cast
from polls.domain.voters import Voter, viewer_of, voter_cookie_set, voter_for_vote, voter_from_request
from polls.kafka.errors import VoteBusUnavailable
from polls.models import Poll

# Open polls listed on the home page, newest first.
HOME_POLLS = 20
# The closing times the create form offers, in minutes from now ("" : no deadline).
CLOSES_IN_CHOICES = [
    ("", "No deadline"),
    ("2", "In 2 minutes"),
    ("5", "In 5 minutes"),
    ("15", "In 15 minutes"),
    ("30", "In 30 minutes"),
    ("60", "In 1 hour"),
    ("1440", "In 1 day"),
]
# How many votes each person has, in the words of the create form.
ONE_VOTE_PER_CHOICES = [
    (Poll.OneVotePer.VOTER, "One per device (browser)"),
    (Poll.OneVotePer.USER, "One per signed-in user"),
    (Poll.OneVotePer.NONE, "No limit"),
]


@require_http_methods(["GET", "POST"])
def home(request: HttpRequest) -> HttpResponse:
    """`/`: the open polls, and a form that creates one and leads to its share view."""
    values: dict[str, Any] = {"one_vote_per": Poll.OneVotePer.VOTER}
    errors: dict[str, list[str]] = {}
    status = 200
    may_create = not settings.POLLS_CREATE_REQUIRES_AUTH or request.user.is_authenticated
    if request.method == "POST" and may_create:
        values = request.POST.dict()
        wait = throttles_check([PollCreateRateThrottle()], request)
        if wait is not None:
            errors, status = {"form": [f"Too many new polls from here: try again in {ceil(wait)} s."]}, 429
        else:
            serializer = PollsApi.CreateInputSerializer(data=_create_input(request.POST))
            if serializer.is_valid():
                user = request.user if request.user.is_authenticated else None
                try:
                    poll = poll_create(**serializer.validated_data, created_by=user)
                except InvalidPoll as exc:  # the text and count rules (polls.domain.services.poll_options_clean)
                    errors, status = {exc.field: [str(exc)]}, exc.status
                else:
                    return redirect("poll-share", poll_id=poll.pk)
            else:
                errors, status = {k: [str(m) for m in v] for k, v in serializer.errors.items()}, 400
    context = {
        "polls": poll_list(status=Poll.Status.OPEN)[:HOME_POLLS],
        "may_create": may_create,
        "values": values,
        "errors": errors,
        "option_fields": [
            (n, f"option{n}", values.get(f"option{n}", "")) for n in range(1, settings.POLL_MAX_OPTIONS + 1)
        ],
        "closes_in_choices": CLOSES_IN_CHOICES,
        "visibility_choices": Poll.Visibility.choices,
        "one_vote_per_choices": ONE_VOTE_PER_CHOICES,
    }
    return render(request, "polls/home.html", context, status=status)


def _create_input(form) -> dict[str, Any]:
    """The create form as POST /polls's body, for its serializer to check by the API's rules."""
    options = [
        text.strip() for n in range(1, settings.POLL_MAX_OPTIONS + 1) if (text := form.get(f"option{n}", "")).strip()
    ]
    data: dict[str, Any] = {
        "question": form.get("question", "").strip(),
        "options": options,
        "results_visibility": form.get("results_visibility", Poll.Visibility.ALWAYS),
        "one_vote_per": form.get("one_vote_per", Poll.OneVotePer.NONE),
        # Multiple choice: a ballot may choose any number of the options.
        "max_choices": max(len(options), 1) if form.get("multiple") else 1,
    }
    minutes = form.get("closes_in", "")
    if minutes:
        if minutes not in dict(CLOSES_IN_CHOICES):
            data["closes_at"] = "not a choice"  # refused by the serializer as any bad date
        else:
            data["closes_at"] = timezone.now() + timedelta(minutes=int(minutes))
    return data


@require_http_methods(["GET", "POST"])
def poll_vote_page(request: HttpRequest, poll_id: int) -> HttpResponse:
    """`/p/<id>`: the ballot as large tap targets; once voted, the live results."""
    voter = viewer_of(request)
    totals = _totals_or_404(poll_id, voter)
    if request.method == "POST":
        return _vote(request, totals)
    just_voted = any(message.extra_tags == "voted" for message in messages.get_messages(request))
    return _vote_page(request, totals, voter=voter, just_voted=just_voted)


def _vote(request: HttpRequest, totals: dict[str, Any]) -> HttpResponse:
    """Cast the form's ballot through vote_cast; redirect to the results, or say why not."""
    wait = vote_throttles_check(request)
    if wait is not None:
        response = _refused(request, totals, f"Too many votes from here: try again in {ceil(wait)} s.", 429)
        response["Retry-After"] = str(ceil(wait))
        return response
    choices = _choices(request.POST)
    if not choices:
        return _refused(
            request, totals, "Choose an option first." if choices == [] else "That is not an option of this poll.", 400
        )
    try:
        voter, new_token = voter_for_vote(voter_from_request(request))
        vote_cast(poll_id=totals["id"], options=choices, voter=voter)
    except VoteBusUnavailable:
        response = _refused(
            request, totals, "Your vote was not recorded: the service is busy. Try again in a moment.", 503
        )
        response["Retry-After"] = str(settings.VOTE_RETRY_AFTER)
        return response
    except PollError as exc:  # answered with the API's status (polls.domain.exceptions)
        return _refused(request, totals, str(exc), exc.status, already_voted=isinstance(exc, AlreadyVoted))
    messages.success(request, "Your vote is in.", extra_tags="voted")
    response = redirect("poll-vote-page", poll_id=totals["id"])
    response.status_code = 303  # the GET of the results, never the POST again
    if new_token is not None:
        voter_cookie_set(response, new_token)
    return response


def _choices(form) -> list[int] | None:
    """The options the form chose, 1-based; [] for none, None for something that is not a number."""
    raw = form.getlist("options") or form.getlist("option")
    try:
        return [int(value) for value in raw]
    except ValueError:
        return None


def _refused(request, totals, error: str, status: int, *, already_voted: bool = False) -> HttpResponse:
    voter = viewer_of(request)
    return _vote_page(
        request,
        totals,
        voter=voter,
        just_voted=already_voted,
        error=error,
        status=status,
        chosen=_choices(request.POST) or [],
    )


def _vote_page(
    request,
    totals: dict[str, Any],
    *,
    voter: Voter | None,
    just_voted: bool,
    error: str | None = None,
    status: int = 200,
    chosen: list[int] | None = None,
) -> HttpResponse:
    is_open = totals["status"] == Poll.Status.OPEN
    voted = just_voted or (
        totals["one_vote_per"] != Poll.OneVotePer.NONE
        and voter is not None
        and voter_has_voted(poll_id=totals["id"], voter=voter)
    )
    context = {
        "poll": totals,
        "is_open": is_open,
        "single": totals["max_choices"] == 1,
        "voted": voted,
        "just_voted": just_voted and error is None,
        "show_form": is_open and not voted,
        "may_vote_again": totals["one_vote_per"] == Poll.OneVotePer.NONE,
        "sign_in_needed": totals["one_vote_per"] == Poll.OneVotePer.USER and (voter is None or voter.user_id is None),
        "await_results": voted and is_open and totals["results_hidden"],
        "error": error,
        "chosen": chosen or [],  # a refused multiple-choice ballot comes back as it was
    }
    return render(request, "polls/vote.html", context, status=status)


@require_GET
def poll_share(request: HttpRequest, poll_id: int) -> HttpResponse:
    """`/p/<id>/share`: the vote link and its QR code, and the way to the presenter view."""
    totals = _totals_or_404(poll_id, viewer_of(request))
    return render(request, "polls/share.html", {"poll": totals, "vote_url": _vote_url(request, poll_id)})


@require_GET
def poll_present(request: HttpRequest, poll_id: int) -> HttpResponse:
    """`/p/<id>/present`: full-screen live results with the QR code, the link and the count."""
    totals = _totals_or_404(poll_id, viewer_of(request))
    return render(request, "polls/present.html", {"poll": totals, "vote_url": _vote_url(request, poll_id)})


@require_GET
def poll_qr(request: HttpRequest, poll_id: int) -> HttpResponse:
    """`/p/<id>/qr.svg`: the vote link as a QR code, an SVG made here (no third party)."""
    _totals_or_404(poll_id, None)
    out = io.BytesIO()
    # Error correction M survives a projector's glare; a border of 4 modules is the standard's quiet zone.
    segno.make(_vote_url(request, poll_id), error="m").save(
        out, kind="svg", scale=10, border=4, title="QR code of the vote link", xmldecl=False
    )
    response = HttpResponse(out.getvalue(), content_type="image/svg+xml")
    response["Cache-Control"] = "public, max-age=3600"
    return response


def _totals_or_404(poll_id: int, voter: Voter | None) -> dict[str, Any]:
    totals = poll_totals_for_viewer(poll_id=poll_id, voter=voter)
    if totals is None:
        raise Http404(f"No poll with id {poll_id}.")
    return totals


def _vote_url(request: HttpRequest, poll_id: int) -> str:
    return request.build_absolute_uri(reverse("poll-vote-page", kwargs={"poll_id": poll_id}))
