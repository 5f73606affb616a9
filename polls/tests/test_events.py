import json
import uuid
from datetime import UTC, datetime

import pytest

from polls.events import VoteEvent
from polls.exceptions import MalformedVoteEvent


def make_event(**overrides) -> VoteEvent:
    fields = dict(vote_id=uuid.uuid4(), poll_id=7, option=2, voter_key="ip:abc", cast_at=datetime.now(UTC))
    fields.update(overrides)
    return VoteEvent(**fields)


def test_event_round_trips_through_bytes():
    event = make_event()
    assert VoteEvent.from_bytes(event.to_bytes()) == event
    assert event.key == b"7"


@pytest.mark.parametrize(
    "raw, reason",
    [
        (None, "empty message"),
        (b"\xff\xfe", "not JSON"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"poll_id": 1}', "missing fields"),
    ],
)
def test_undecodable_messages_are_refused_with_the_reason(raw, reason):
    with pytest.raises(MalformedVoteEvent, match=reason):
        VoteEvent.from_bytes(raw)


@pytest.mark.parametrize(
    "field, value, reason",
    [
        ("vote_id", "not-a-uuid", "vote_id is not a UUID"),
        ("poll_id", "1", "poll_id is not a positive integer"),
        ("poll_id", True, "poll_id is not a positive integer"),
        ("option", 0, "option is not a positive integer"),
        ("option", 2**64, "option is not a positive integer"),
        ("voter_key", 5, "voter_key is not a string"),
        ("voter_key", "x" * 129, "voter_key is not a string"),
        ("cast_at", "yesterday", "cast_at is not an ISO 8601 time"),
        ("cast_at", "2026-11-25T10:00:00", "cast_at has no time zone"),
    ],
)
def test_invalid_fields_are_refused_with_the_field_named(field, value, reason):
    data = json.loads(make_event().to_bytes())
    data[field] = value
    with pytest.raises(MalformedVoteEvent, match=reason):
        VoteEvent.from_bytes(json.dumps(data).encode())
