"""Who is voting: the identity a vote is deduplicated and rate-limited by.

Three kinds, strongest first: a signed-in user; an anonymous voter token that the
server issues (in a signed cookie for browsers, or the X-Voter-Token header for API
clients); and, for the seed's anonymous clients, only the client's address.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from django.conf import settings
from django.core import signing
from django.http import HttpRequest

from polling.randomness import random_token
from polls.domain.exceptions import PollError

COOKIE_NAME = "voter"
HEADER = "HTTP_X_VOTER_TOKEN"
_SALT = "polls.voter-token"


class InvalidVoterToken(PollError):
    status = 401  # a credential that is not ours, as a wrong API token
    www_authenticate = "Voter-Token"

    def __init__(self) -> None:
        super().__init__("X-Voter-Token is not a voter token issued by this server: get one from POST /voters.")


@dataclass(frozen=True)
class Voter:
    user_id: int | None
    # The unsigned id inside a voter token, when the client has one.
    token_id: str | None
    # A keyed hash of the client's address: never the address itself.
    address_key: str
    # True when token_id was issued for this very request (the client sent no token):
    # an Idempotency-Key's retry then cannot carry it yet (polls.domain.idempotency).
    token_is_new: bool = False

    @property
    def key(self) -> str:
        """What a vote row records as its voter: the strongest identity known."""
        if self.user_id is not None:
            return f"user:{self.user_id}"
        if self.token_id is not None:
            return f"voter:{self.token_id}"
        return f"ip:{self.address_key}"


def voter_token_issue() -> tuple[str, str]:
    """A new anonymous voter: (token id, signed token to hand to the client)."""
    token_id = random_token(16)
    return token_id, voter_token_sign(token_id)


def voter_token_sign(token_id: str) -> str:
    return _signer(settings.SECRET_KEY).sign(token_id)


def voter_for_vote(voter: Voter) -> tuple[Voter, str | None]:
    """The voter a vote is cast as, and the signed token to set as its cookie, if new.

    A client with neither a user nor a token gets a token with its first vote, so that
    one-vote-per-voter polls work for browsers without a separate call.
    """
    if voter.user_id is not None or voter.token_id is not None:
        return voter, None
    token_id, signed = voter_token_issue()
    return Voter(user_id=None, token_id=token_id, address_key=voter.address_key, token_is_new=True), signed


def voter_token_of(voter_key: str) -> str | None:
    """The signed token of a Voter.key that names a voter token; None for users and addresses."""
    token_id = voter_key.removeprefix("voter:")
    return voter_token_sign(token_id) if token_id != voter_key else None


def voter_cookie_token(event, new_token: str) -> str:
    """The token a first vote's cookie carries: a repeated ballot answers with the cookie of
    the voter it was cast as."""
    return voter_token_of(event.voter_key) or new_token


def voter_token_read(signed: str) -> str | None:
    """The token id inside a signed voter token, or None if this server did not sign it."""
    return _token_read(signed, settings.SECRET_KEY)


@functools.lru_cache(maxsize=4)
def _signer(secret_key: str) -> signing.Signer:
    return signing.Signer(key=secret_key, salt=_SALT)


# A returning voter's token is checked twice a vote (its rate limit, its identity) and on
# every vote after: a verified token is kept rather than its HMAC computed again.
@functools.lru_cache(maxsize=65536)
def _token_read(signed: str, secret_key: str) -> str | None:
    try:
        return _signer(secret_key).unsign(signed)
    except signing.BadSignature:
        return None


def voter_cookie_set(response, signed_token: str) -> None:
    response.set_cookie(
        COOKIE_NAME,
        signed_token,
        max_age=settings.VOTER_COOKIE_MAX_AGE,
        httponly=True,
        samesite="Lax",
        secure=settings.SESSION_COOKIE_SECURE,
    )


def client_address_key(address: str) -> str:
    return hashlib.sha256(f"{settings.SECRET_KEY}:{address}".encode()).hexdigest()[:16]


def voter_from_request(request) -> Voter:
    """The voter behind a request. A forged X-Voter-Token is an error; a bad cookie is ignored."""
    token_id = None
    header = request.META.get(HEADER)
    if header:
        token_id = voter_token_read(header)
        if token_id is None:
            raise InvalidVoterToken()
    elif request.COOKIES.get(COOKIE_NAME):
        token_id = voter_token_read(request.COOKIES[COOKIE_NAME])
    user = getattr(request, "user", None)
    return Voter(
        user_id=user.pk if user is not None and user.is_authenticated else None,
        token_id=token_id,
        address_key=client_address_key(request.META.get("REMOTE_ADDR") or "unknown"),
    )


def viewer_of(request: HttpRequest) -> Voter | None:
    """The voter behind a page request; a forged voter token sees what the public sees."""
    try:
        return voter_from_request(request)
    except PollError:
        return None
