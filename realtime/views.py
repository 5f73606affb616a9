"""The live results page: server-rendered totals that a small script keeps live."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from polls.domain.live import poll_totals_for_viewer
from polls.domain.voters import viewer_of


def poll_live(request: HttpRequest, poll_id: str) -> HttpResponse:
    totals = poll_totals_for_viewer(poll_id=int(poll_id), voter=viewer_of(request))
    if totals is None:
        raise Http404(f"No poll with id {poll_id}.")
    # The first paint shows real totals even before (or without) the WebSocket.
    return render(request, "realtime/live.html", {"poll": totals})
