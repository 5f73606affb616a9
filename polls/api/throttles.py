"""The rate limits of votes, voter tokens and new polls, on polling.throttles' fixed windows.

A vote passes the same limits whichever path takes it (the REST view, the audience's
form, the lean path); the defaults and what they allow: settings.RATE_LIMIT_DEFAULTS.
"""

from __future__ import annotations

from polling.throttles import FixedWindowThrottle, throttles_check
from polls.domain.voters import COOKIE_NAME, HEADER, client_address_key, voter_token_read


def _address(request) -> str:
    return client_address_key(request.META.get("REMOTE_ADDR") or "unknown")


def _voter_identity(request) -> str | None:
    """The signed-in user or the valid voter token behind a request, or None: a new voter."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    signed = request.META.get(HEADER) or request.COOKIES.get(COOKIE_NAME)
    token_id = voter_token_read(signed) if signed else None
    return f"voter:{token_id}" if token_id else None


class VoteAddressRateThrottle(FixedWindowThrottle):
    """Votes from one address: a ceiling far above what a whole venue behind one NAT sends."""

    scope = "vote-address"
    setting = "RATE_LIMIT_VOTES_PER_ADDRESS"

    def identity(self, request):
        return _address(request)


class VoteVoterRateThrottle(FixedWindowThrottle):
    """Votes of one voter token or user: where a flood from one client is stopped."""

    scope = "vote-voter"
    setting = "RATE_LIMIT_VOTES_PER_VOTER"

    def identity(self, request):
        return _voter_identity(request)


class NewVoterRateThrottle(FixedWindowThrottle):
    """Voter tokens minted for one address: a vote without a token mints one, as POST /voters does.

    Bounds a client that sheds its token to escape the per-voter limit; a request that
    already has a voter (token or user) is not counted here.
    """

    scope = "voter-new"
    setting = "RATE_LIMIT_NEW_VOTERS_PER_ADDRESS"

    def identity(self, request):
        return _address(request) if _voter_identity(request) is None else None


class VoterTokenIssueRateThrottle(NewVoterRateThrottle):
    """POST /voters, which mints a token whatever the request carries: the same window."""

    def identity(self, request):
        return _address(request)


class PollCreateRateThrottle(FixedWindowThrottle):
    scope = "poll-create"
    setting = "RATE_LIMIT_POLLS_PER_ADDRESS"

    def identity(self, request):
        return _address(request)


# Every limit a vote passes, whichever path takes it (the REST view, the audience's form).
VOTE_THROTTLES = (VoteAddressRateThrottle, VoteVoterRateThrottle, NewVoterRateThrottle)


def vote_throttles_check(request) -> float | None:
    """throttles_check of every vote limit: seconds to wait when one is exceeded, else None."""
    return throttles_check([throttle() for throttle in VOTE_THROTTLES], request)
