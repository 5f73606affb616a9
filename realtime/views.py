"""The live results page: server-rendered totals that a small script keeps live."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from polls.domain.exceptions import PollError
from polls.domain.voters import Voter, voter_from_request
from realtime.selectors import poll_totals_for_viewer


def viewer_of(request: HttpRequest) -> Voter | None:
    """The voter behind a page request; a forged voter token sees what the public sees."""
    try:
        return voter_from_request(request)
    except PollError:
        return None


def poll_live(request: HttpRequest, poll_id: str) -> HttpResponse:
    totals = poll_totals_for_viewer(poll_id=int(poll_id), voter=viewer_of(request))
    if totals is None:
        raise Http404(f"No poll with id {poll_id}.")
    # The first paint shows real totals even before (or without) the WebSocket.
    return render(request, "realtime/live.html", {"poll": totals})
