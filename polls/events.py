"""The vote event: what the API publishes to Kafka and the worker applies.

The wire format is one JSON object per message, keyed by the poll id so that all votes
of a poll land on one partition in order:

    {"vote_id": "<uuid>", "poll_id": 1, "option": 2, "voter_key": "anon:…",
     "cast_at": "2026-11-25T16:00:00.123456+00:00"}
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from polls.exceptions import MalformedVoteEvent

_FIELDS = {"vote_id", "poll_id", "option", "voter_key", "cast_at"}


@dataclass(frozen=True, slots=True)
class VoteEvent:
    vote_id: uuid.UUID
    poll_id: int
    option: int
    voter_key: str
    cast_at: datetime

    @property
    def key(self) -> bytes:
        return str(self.poll_id).encode()

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "vote_id": str(self.vote_id),
                "poll_id": self.poll_id,
                "option": self.option,
                "voter_key": self.voter_key,
                "cast_at": self.cast_at.isoformat(),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> VoteEvent:
        """Decode and validate one message; raise MalformedVoteEvent saying what is wrong."""
        if raw is None:
            raise MalformedVoteEvent("empty message")
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise MalformedVoteEvent(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise MalformedVoteEvent("not a JSON object")
        missing = _FIELDS - data.keys()
        if missing:
            raise MalformedVoteEvent(f"missing fields: {', '.join(sorted(missing))}")
        try:
            vote_id = uuid.UUID(data["vote_id"])
        except (TypeError, ValueError, AttributeError):
            raise MalformedVoteEvent("vote_id is not a UUID") from None
        for name in ("poll_id", "option"):
            value = data[name]
            if type(value) is not int or value < 1 or value > 2**63 - 1:
                raise MalformedVoteEvent(f"{name} is not a positive integer")
        if not isinstance(data["voter_key"], str) or len(data["voter_key"]) > 128:
            raise MalformedVoteEvent("voter_key is not a string of at most 128 characters")
        try:
            cast_at = datetime.fromisoformat(data["cast_at"])
        except (TypeError, ValueError):
            raise MalformedVoteEvent("cast_at is not an ISO 8601 time") from None
        if cast_at.tzinfo is None:
            raise MalformedVoteEvent("cast_at has no time zone")
        return cls(
            vote_id=vote_id,
            poll_id=data["poll_id"],
            option=data["option"],
            voter_key=data["voter_key"],
            cast_at=cast_at,
        )
