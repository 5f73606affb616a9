"""Idempotency-Key on votes, by the rules clients know from payment APIs (Stripe's).

- A key is scoped to the poll and the voter (idempotency_scope): two voters who send
  the same key cast two ballots.
- The first request's choice is remembered by a fingerprint: the same key with the same
  choice answers as the first time (204) and publishes nothing new; with another choice
  it is refused (IdempotencyKeyReused, 409); while the first is still being processed,
  a second is refused (IdempotencyKeyInUse, 409).
- A first request refused before publishing (4xx, the database down) leaves no record:
  a retry may succeed. One whose publishing failed (503) may still have reached the vote
  log, so its record stays and lets only the same choice through: a retry of it counts
  once, and no other choice can take its ballot id (which would drop the later one).
- Records live in the shared cache (Redis; per process in the embedded mode) for
  IDEMPOTENCY_KEY_TTL. Beyond that the ballot's vote rows answer: a key keeps counting
  once for as long as its ballot is stored.

Votes without a key never come here: they pay no round trip for it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from math import ceil

from django.conf import settings
from django.core.cache import cache
from django.db.models import Subquery

from polls.domain.exceptions import IdempotencyKeyInUse, IdempotencyKeyReused, IdempotencyUnavailable
from polls.domain.voters import Voter
from polls.models import Vote

logger = logging.getLogger(__name__)

# Ballot ids of keyed votes are uuid5 in this namespace: the same for every retry.
_NAMESPACE = uuid.UUID("5b0c1c52-4b0e-4f5e-9d36-2a4f3f0c7a11")

# A key's record in the cache: (state, choice fingerprint, voter key or None, ballot id).
_PENDING, _DONE, _FAILED = "pending", "done", "failed"


def idempotency_scope(voter: Voter) -> str:
    """Whose keys these are: the signed-in user, else the voter token the client sent,
    else the client's address (a keyed hash of it).

    A client that sent no token is given one with its first vote (voter_for_vote), in
    the answer's cookie; a retry whose client never got that answer has no cookie yet.
    Scoped by that new token, the retry would be another ballot, counted twice; scoped
    by address, it maps to the same ballot. The cost: clients without a token behind one
    address (a venue's NAT) share a scope, so their keys must be unique (a UUID, as every
    key should be), and such a client's retry from a new address is a new ballot. API
    clients that want neither get a token first (POST /voters, X-Voter-Token).
    """
    if voter.user_id is not None:
        return f"user:{voter.user_id}"
    if voter.token_id is not None and not voter.token_is_new:
        return f"voter:{voter.token_id}"
    return f"ip:{voter.address_key}"


def ballot_id(*, poll_id: int, scope: str, idempotency_key: str) -> uuid.UUID:
    """The ballot id of a vote sent with this Idempotency-Key in this scope (idempotency_scope)."""
    return uuid.uuid5(_NAMESPACE, f"{poll_id}:{scope}:{idempotency_key}")


def choice_fingerprint(options: Sequence[int]) -> str:
    """The choice a request makes, whatever its shape: `{"option": 2}` and `{"options": [2]}`
    are one choice, and so are `[1, 3]` and `[3, 1]`."""
    return ",".join(str(option) for option in sorted(options))


@dataclass
class KeyClaim:
    """A keyed vote's hold on its key, from idempotency_claim until settled or released."""

    vote_id: uuid.UUID  # the ballot's: for a repeat, the accepted ballot's own
    fingerprint: str
    cache_keys: list[str]  # the record's key, then any alias (see settle)
    # Set when the request repeats a ballot already accepted: answer as then, publish nothing.
    replay_voter_key: str | None = None

    def settle(self, *, voter_key: str) -> None:
        """The ballot is published: remember it. Also under the voter token issued with it,
        so that a retry that carries the new cookie finds it too."""
        try:
            cache.set_many(
                dict.fromkeys(self.cache_keys, (_DONE, self.fingerprint, voter_key, self.vote_id)),
                timeout=settings.IDEMPOTENCY_KEY_TTL,
            )
        except Exception as exc:  # noqa: BLE001 - any failure of the cache backend
            # The vote is durable: it is answered 204. Until the pending record expires a
            # retry hears 409; after it, the vote rows answer (or the same ballot is sent again).
            logger.warning("idempotency record of ballot %s not kept, the cache is unavailable: %r", self.vote_id, exc)

    def fail(self) -> None:
        """Publishing failed (a 503), perhaps after the vote reached the log: let only the same choice retry."""
        self._write((_FAILED, self.fingerprint, None, self.vote_id), timeout=settings.IDEMPOTENCY_KEY_TTL)

    def release(self) -> None:
        """Nothing was published: forget the key, so a retry may succeed."""
        try:
            cache.delete(self.cache_keys[0])
        except Exception as exc:  # noqa: BLE001 - any failure of the cache backend
            logger.warning(
                "idempotency record of ballot %s not released, the cache is unavailable: %r", self.vote_id, exc
            )

    def _write(self, record: tuple, *, timeout: float) -> None:
        try:
            cache.set(self.cache_keys[0], record, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - any failure of the cache backend
            logger.warning("idempotency record of ballot %s not kept, the cache is unavailable: %r", self.vote_id, exc)


def idempotency_claim(*, poll_id: int, voter: Voter, idempotency_key: str, options: Sequence[int]) -> KeyClaim:
    """Take the key for this request, or say how it was used before.

    Returns a claim to settle once the ballot is published, or to release or fail;
    or, for a repeat of an accepted ballot, a claim with replay_voter_key set and
    nothing to do. Raises IdempotencyKeyReused, IdempotencyKeyInUse or
    IdempotencyUnavailable (and then holds nothing).
    """
    scope = idempotency_scope(voter)
    vote_id = ballot_id(poll_id=poll_id, scope=scope, idempotency_key=idempotency_key)
    claim = KeyClaim(vote_id=vote_id, fingerprint=choice_fingerprint(options), cache_keys=[_cache_key(vote_id)])
    if voter.token_is_new:
        token_scope = f"voter:{voter.token_id}"
        claim.cache_keys.append(
            _cache_key(ballot_id(poll_id=poll_id, scope=token_scope, idempotency_key=idempotency_key))
        )
    try:
        record = _claim_record(claim)
    except IdempotencyKeyInUse:
        raise
    except Exception as exc:  # any failure of the cache backend
        raise IdempotencyUnavailable(repr(exc)) from exc
    if record is not None:
        state, fingerprint, voter_key, vote_id = record
        if fingerprint != claim.fingerprint:
            raise IdempotencyKeyReused()
        if state == _PENDING:
            raise IdempotencyKeyInUse()
        if state == _DONE:
            claim.vote_id, claim.replay_voter_key = vote_id, voter_key
            return claim

    try:
        stored = _stored_ballot(poll_id=poll_id, claim=claim, voter=voter, idempotency_key=idempotency_key)
    except BaseException:
        claim.release()
        raise
    if stored is not None:
        # Past the record's time, or the cache was emptied: the vote rows answer.
        fingerprint, voter_key, vote_id = stored
        claim._write((_DONE, fingerprint, voter_key, vote_id), timeout=settings.IDEMPOTENCY_KEY_TTL)
        if fingerprint != claim.fingerprint:
            raise IdempotencyKeyReused()
        claim.vote_id, claim.replay_voter_key = vote_id, voter_key
    return claim


def _cache_key(vote_id: uuid.UUID) -> str:
    return f"idempotency:{vote_id}"


def _pending_timeout() -> int:
    """How long a request holds its key: well past its own time budget, so a live request
    never loses it; a crashed one frees it after this."""
    return ceil(settings.VOTE_PUBLISH_TIMEOUT) * 2 + 30


def _claim_record(claim: KeyClaim) -> tuple | None:
    """Add the pending record; None if it was added, else the record already there.

    A failed record of the same choice is taken over (two retries doing so at once send
    the same ballot, which counts once).
    """
    key, pending = claim.cache_keys[0], (_PENDING, claim.fingerprint, None, claim.vote_id)
    for _ in range(2):
        if cache.add(key, pending, timeout=_pending_timeout()):
            return None
        record = cache.get(key)
        if record is None:
            continue  # expired between the two calls
        if record[0] == _FAILED and record[1] == claim.fingerprint:
            cache.set(key, pending, timeout=_pending_timeout())
            return None
        return record
    raise IdempotencyKeyInUse()


def _stored_ballot(
    *, poll_id: int, claim: KeyClaim, voter: Voter, idempotency_key: str
) -> tuple[str, str, uuid.UUID] | None:
    """(choice fingerprint, voter key, ballot id) of the ballot this key names in the database, if stored.

    A voter token's keys also find the ballot cast from this address just before the
    token was issued (its voter key is the token's): the retry of a first vote, after
    the record expired, that carries the cookie the first answer set.

    One query: the ballot's first row by its unique vote_id gives the voter key, and
    (poll, voter_key) is indexed, so every row of the ballot is found without a scan.
    """
    ids = [claim.vote_id]
    if voter.user_id is None and voter.token_id is not None and not voter.token_is_new:
        ids.append(ballot_id(poll_id=poll_id, scope=f"ip:{voter.address_key}", idempotency_key=idempotency_key))
    voter_keys = Vote.objects.filter(vote_id__in=ids).values("voter_key")
    rows = Vote.objects.filter(poll_id=poll_id, voter_key__in=Subquery(voter_keys), ballot_id__in=ids).values_list(
        "ballot_id", "voter_key", "option__position"
    )
    choices: dict[uuid.UUID, list[int]] = {}
    voter_key_of: dict[uuid.UUID, str] = {}
    for row_ballot, voter_key, position in rows:
        choices.setdefault(row_ballot, []).append(position)
        voter_key_of[row_ballot] = voter_key
    if claim.vote_id in choices:
        return choice_fingerprint(choices[claim.vote_id]), voter_key_of[claim.vote_id], claim.vote_id
    if len(ids) > 1 and voter_key_of.get(ids[1]) == voter.key:
        return choice_fingerprint(choices[ids[1]]), voter.key, ids[1]
    return None
