import json
import uuid
from datetime import UTC, datetime

import pytest

from polls.events import VoteEvent
from polls.exceptions import MalformedVoteEvent


def make_event(**overrides) -> VoteEvent:
    fields = dict(vote_id=uuid.uuid4(), poll_id=7, options=(2,), voter_key="ip:abc", cast_at=datetime.now(UTC))
    fields.update(overrides)
    return VoteEvent(**fields)


def test_a_message_with_only_the_seed_option_field_is_read_as_one_choice():
    data = json.loads(make_event().to_bytes())
    del data["options"]
    data["option"] = 3
    assert VoteEvent.from_bytes(json.dumps(data).encode()).options == (3,)


def test_each_choice_of_a_ballot_has_a_stable_row_id():
    event = make_event(options=(1, 3))
    assert event.row_ids()[0] == (event.vote_id, 1)
    assert event.row_ids() == make_event(vote_id=event.vote_id, options=(1, 3)).row_ids()
    assert len({row_id for row_id, _ in event.row_ids()}) == 2


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
        (b'{"poll_id": 1}', "missing fields: cast_at, option, vote_id, voter_key"),
        (b"[" * 100_000, "not JSON"),
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
        ("poll_id", float("nan"), "poll_id is not a positive integer"),  # NaN: JSON only to Python's parser
        ("options", [0], "option is not a positive integer"),
        ("options", [2**64], "option is not a positive integer"),
        ("options", [], "options is not a list of 1 to 100 options"),
        ("options", 3, "options is not a list of 1 to 100 options"),
        ("options", [1, 1], "options repeats an option"),
        ("dedupe_key", "", "dedupe_key is not null or a string"),
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
