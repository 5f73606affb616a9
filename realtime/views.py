"""The live results page: server-rendered totals that a small script keeps live."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from polls.exceptions import PollError
from polls.voters import voter_from_request
from realtime.selectors import poll_live_totals, viewer_sees_results


def poll_live(request: HttpRequest, poll_id: str) -> HttpResponse:
    live = poll_live_totals(poll_id=int(poll_id))
    if live is None:
        raise Http404(f"No poll with id {poll_id}.")
    totals = live.public
    if live.full is not None:
        try:
            voter = voter_from_request(request)
        except PollError:  # a forged voter token sees what the public sees
            voter = None
        if voter is not None and viewer_sees_results(totals=live, voter=voter):
            totals = live.full
    # The first paint shows real totals even before (or without) the WebSocket.
    return render(request, "realtime/live.html", {"poll": totals})
