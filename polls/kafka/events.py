"""The vote event: what the API publishes to Kafka and the worker applies.

The wire format is one JSON object per message, keyed by the poll id so that all votes
of a poll land on one partition in order:

    {"vote_id": "<uuid>", "poll_id": 1, "option": 2, "options": [2],
     "voter_key": "ip:…", "dedupe_key": null, "cast_at": "2026-11-25T16:00:00.123456+00:00"}

`vote_id` identifies the ballot. `option` is its first choice (the seed's single-choice
shape); `options` lists every choice of a multiple-choice ballot. A reader accepts a
message with only `option`. `dedupe_key` is set when the poll allows one ballot per voter.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from polls.kafka.errors import MalformedVoteEvent

_REQUIRED = {"vote_id", "poll_id", "voter_key", "cast_at"}
_MAX_KEY = 128
_MAX_CHOICES = 100


class VoteEvent(msgspec.Struct, frozen=True, gc=False):
    """One ballot, immutable. A msgspec Struct, not a frozen dataclass: the worker builds
    one per vote, and a frozen dataclass's __init__ (a guarded setattr per field) was
    half the cost of decoding a message (docs/decisions/0008-worker-throughput.md). Not
    tracked by the garbage collector: its fields (a UUID, numbers, strings, a time)
    cannot form a cycle, and a batch of 5,000 would otherwise start collections."""

    vote_id: uuid.UUID
    poll_id: int
    options: tuple[int, ...]
    voter_key: str
    cast_at: datetime
    dedupe_key: str | None = None

    @property
    def key(self) -> bytes:
        return str(self.poll_id).encode()

    def row_ids(self) -> list[tuple[uuid.UUID, int]]:
        """(vote row id, option) per choice; the first row's id is the ballot's own.

        Derived, not random, so that a redelivered ballot yields the same row ids.
        (votes_apply writes a ballot of one choice, nearly all of them, straight from
        its vote_id, without this list.)
        """
        first, *rest = self.options
        return [(self.vote_id, first)] + [(uuid.uuid5(self.vote_id, str(option)), option) for option in rest]

    def to_bytes(self) -> bytes:
        return msgspec.json.encode(
            {
                "vote_id": str(self.vote_id),
                "poll_id": self.poll_id,
                "option": self.options[0],
                "options": list(self.options),
                "voter_key": self.voter_key,
                "dedupe_key": self.dedupe_key,
                "cast_at": self.cast_at.isoformat(),
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> VoteEvent:
        """Decode and validate one message; raise MalformedVoteEvent saying what is wrong.

        A valid message is decoded and checked in C (msgspec, `_decode_fast`); anything
        that does not pass goes through the checks below, which accept everything the
        fast path accepts and more, and say what is wrong.
        """
        event = _decode_fast(raw)
        return event if event is not None else cls._from_bytes_checked(raw)

    @classmethod
    def _from_bytes_checked(cls, raw: bytes | None) -> VoteEvent:
        if raw is None:
            raise MalformedVoteEvent("empty message")
        try:
            data = msgspec.json.decode(raw)
        except (msgspec.DecodeError, RecursionError):
            # msgspec refuses what the standard parser reads (numbers past a double, NaN):
            # the standard parser decides, so such a message is refused for its field.
            try:
                data = json.loads(raw)
            except (UnicodeDecodeError, ValueError, RecursionError) as exc:
                raise MalformedVoteEvent(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise MalformedVoteEvent("not a JSON object")
        missing = _REQUIRED - data.keys()
        if "option" not in data and "options" not in data:
            missing.add("option")
        if missing:
            raise MalformedVoteEvent(f"missing fields: {', '.join(sorted(missing))}")
        try:
            vote_id = uuid.UUID(data["vote_id"])
        except (TypeError, ValueError, AttributeError):
            raise MalformedVoteEvent("vote_id is not a UUID") from None
        _check_positive(data["poll_id"], "poll_id")
        options = data["options"] if "options" in data else [data["option"]]
        if not isinstance(options, list) or not 1 <= len(options) <= _MAX_CHOICES:
            raise MalformedVoteEvent("options is not a list of 1 to 100 options")
        for option in options:
            _check_positive(option, "option")
        if len(set(options)) != len(options):
            raise MalformedVoteEvent("options repeats an option")
        if not isinstance(data["voter_key"], str) or len(data["voter_key"]) > _MAX_KEY:
            raise MalformedVoteEvent("voter_key is not a string of at most 128 characters")
        dedupe_key = data.get("dedupe_key")
        if dedupe_key is not None and (not isinstance(dedupe_key, str) or not 0 < len(dedupe_key) <= _MAX_KEY):
            raise MalformedVoteEvent("dedupe_key is not null or a string of 1 to 128 characters")
        try:
            cast_at = datetime.fromisoformat(data["cast_at"])
        except (TypeError, ValueError):
            raise MalformedVoteEvent("cast_at is not an ISO 8601 time") from None
        if cast_at.tzinfo is None:
            raise MalformedVoteEvent("cast_at has no time zone")
        return cls(
            vote_id=vote_id,
            poll_id=data["poll_id"],
            options=tuple(options),
            voter_key=data["voter_key"],
            cast_at=cast_at,
            dedupe_key=dedupe_key,
        )


_Id = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]


class _Wire(msgspec.Struct, gc=False):
    """A vote message as the fast path reads it; the checks msgspec cannot express follow in _decode_fast.

    Untracked by the garbage collector, like VoteEvent: decoded fields cannot form a cycle.
    """

    vote_id: uuid.UUID
    poll_id: _Id
    voter_key: Annotated[str, msgspec.Meta(max_length=_MAX_KEY)]
    # Parsed by datetime.fromisoformat, as the checked path does: the same times accepted.
    cast_at: str
    # UNSET, not None, when absent: a null `options` or `option` is refused, as below.
    options: Annotated[list[_Id], msgspec.Meta(min_length=1, max_length=_MAX_CHOICES)] | msgspec.UnsetType = (
        msgspec.UNSET
    )
    option: _Id | msgspec.UnsetType = msgspec.UNSET
    dedupe_key: Annotated[str, msgspec.Meta(min_length=1, max_length=_MAX_KEY)] | None = None


_wire_decoder = msgspec.json.Decoder(_Wire)


def _decode_fast(raw: bytes | None) -> VoteEvent | None:
    """The event of a valid message, or None: the caller then checks it field by field.

    Decoding into a typed struct does the JSON parse and most checks in C, several times
    faster than the checks in Python, and the vote worker decodes every vote.
    Where msgspec is stricter than the checked path (a present but invalid `option`
    beside a valid `options`), the message only takes the slow path.
    """
    if raw is None:
        return None
    try:
        wire = _wire_decoder.decode(raw)
        cast_at = datetime.fromisoformat(wire.cast_at)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None
    if cast_at.tzinfo is None:
        return None
    options = wire.options
    if options is msgspec.UNSET:
        if wire.option is msgspec.UNSET:
            return None
        options = (wire.option,)
    elif len(options) > 1 and len(set(options)) != len(options):
        return None
    return VoteEvent(
        vote_id=wire.vote_id,
        poll_id=wire.poll_id,
        options=tuple(options),
        voter_key=wire.voter_key,
        cast_at=cast_at,
        dedupe_key=wire.dedupe_key,
    )


def _check_positive(value: object, name: str) -> None:
    # bool is an int in Python; a JSON true is not an id.
    if type(value) is not int or value < 1 or value > 2**63 - 1:
        raise MalformedVoteEvent(f"{name} is not a positive integer")
