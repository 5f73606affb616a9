"""Floor views: the vote API's CPU work and answers, without the database, Redis or Kafka.

FloorVoteApi runs what PollVoteApi runs before and after its I/O: the same input
serializer, the poll_id check, the voter identity (and a new voter token with its signed
cookie, as the real view hands one to a client that has none), then answers 204. It
skips the rate-limit throttles (a cache round trip each) and vote_cast (a database read
and the Kafka publish). So it is the best the server, middleware and DRF can do for this
request: the product's intake divided by it says what the vote path itself costs.
"""

from __future__ import annotations

from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from polling.strict import validated_data
from polls.api.apis import PollVoteApi

try:  # the voter identity, where the product has one (it hashes and signs, no I/O)
    from polls.domain.voters import Voter, voter_from_request, voter_token_issue
except ImportError:  # pragma: no cover - older product code
    Voter = voter_from_request = voter_token_issue = None
try:
    from polls.domain.voters import voter_cookie_set as _set_voter_cookie
except ImportError:  # pragma: no cover
    _set_voter_cookie = None

# A leaderboard answer of the product's default size (10 entries), served from memory.
_LEADERBOARD = {
    "leaderboard": [
        {
            "option": f"Option {rank}",
            "count": 1000 - rank,
            "poll_id": rank,
            "position": 1,
            "question": f"Benchmark question {rank}?",
        }
        for rank in range(1, 11)
    ]
}


class FloorVoteApi(APIView):
    throttle_classes: list = []

    def post(self, request: Request, poll_id: int) -> Response:
        data = validated_data(PollVoteApi.InputSerializer(data=request.data))
        if data.get("poll_id") is not None and data["poll_id"] != poll_id:
            raise serializers.ValidationError(
                {"poll_id": [f"Does not match the poll in the path: {data['poll_id']} != {poll_id}."]}
            )
        response = Response(status=status.HTTP_204_NO_CONTENT)
        if voter_from_request is not None:
            voter = voter_from_request(request)
            if voter.token_id is None and voter.user_id is None and voter_token_issue is not None:
                _, new_token = voter_token_issue()
                if _set_voter_cookie is not None:
                    _set_voter_cookie(response, new_token)
        return response


class FloorLeaderboardApi(APIView):
    """A leaderboard-shaped JSON answer with no query: the floor of a GET."""

    throttle_classes: list = []

    def get(self, request: Request) -> Response:
        return Response(_LEADERBOARD)
