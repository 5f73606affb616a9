import json
import uuid
from datetime import UTC, datetime

import pytest

from polls.kafka.errors import MalformedVoteEvent
from polls.kafka.events import VoteEvent, _decode_fast


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


def test_a_valid_message_is_read_by_the_fast_decoder():
    event = make_event(options=(3, 1), dedupe_key="voter:x")
    assert _decode_fast(event.to_bytes()) == event


_VOTE_ID = "153b2987-5699-4bfe-83d7-271be5880602"
# Values each field is set to in turn: valid, invalid, and the forms where two parsers may differ.
_ODD_VALUES = [
    None,
    True,
    False,
    0,
    1,
    7,
    -1,
    1.0,
    2**63 - 1,
    2**63,
    2**64,
    "",
    "1",
    "x" * 128,
    "x" * 129,
    "é" * 128,
    "é" * 129,
    [],
    [1],
    [2, 3],
    [1, 1],
    [0],
    [True],
    [1.0],
    [2**63],
    [None],
    list(range(1, 101)),
    list(range(1, 102)),
    {},
    {"a": 1},
    _VOTE_ID,
    _VOTE_ID.upper(),
    _VOTE_ID.replace("-", ""),
    "{" + _VOTE_ID + "}",
    "urn:uuid:" + _VOTE_ID,
    _VOTE_ID[:8] + _VOTE_ID[9:13] + "-" + _VOTE_ID[13:],
    _VOTE_ID[:-1],
    "2026-11-25T10:00:00+00:00",
    "2026-11-25T10:00:00Z",
    "2026-11-25t10:00:00z",
    "2026-11-25 10:00:00+01:00",
    "2026-11-25T10:00:00.1234567+05:30",
    "20261125T100000Z",
    "2026-11-25T10:00:00",
    "2026-11-25",
    "2026-W48-3T10:00Z",
    "2026-11-25T24:00:00Z",
    "2026-11-25T10:00:60Z",
]
_FIELDS = ["vote_id", "poll_id", "option", "options", "voter_key", "dedupe_key", "cast_at"]


def _odd_messages():
    base = json.loads(make_event(vote_id=uuid.UUID(_VOTE_ID), options=(2,)).to_bytes())
    for field in _FIELDS:
        without = {k: v for k, v in base.items() if k != field}
        yield json.dumps(without).encode()
        for value in _ODD_VALUES:
            yield json.dumps({**base, field: value}).encode()
            if field in ("option", "options"):  # each shape of the choice alone
                yield json.dumps(
                    {**without, "option" if field == "options" else "options": None, field: value}
                ).encode()
                yield json.dumps(
                    {
                        k: v
                        for k, v in {**base, field: value}.items()
                        if k != ("option" if field == "options" else "options")
                    }
                ).encode()
    yield b'{"vote_id": "%s", "vote_id": 5}' % _VOTE_ID.encode()
    yield json.dumps({**base, "poll_id": 3}).encode().replace(b"}", b', "poll_id": 4}')
    yield b"null"
    yield b""


@pytest.mark.parametrize("raw", list(_odd_messages()))
def test_the_fast_decoder_accepts_nothing_the_checked_one_refuses_and_reads_the_same_event(raw):
    fast = _decode_fast(raw)
    try:
        checked = VoteEvent._from_bytes_checked(raw)
    except MalformedVoteEvent:
        assert fast is None
    else:
        assert fast is None or fast == checked


def test_a_deeply_nested_unknown_field_is_refused_as_not_json():
    raw = make_event().to_bytes()[:-1] + b',"extra":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert _decode_fast(raw) is None
    with pytest.raises(MalformedVoteEvent, match="not JSON"):
        VoteEvent.from_bytes(raw)
