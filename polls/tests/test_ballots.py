"""polls.domain.ballots: a vote's body read into a ballot, with the answers the DRF serializer gave."""

import uuid

import pytest

from polls.domain.ballots import Ballot, ballot_read, idempotency_key
from polls.domain.exceptions import BallotInvalid, BodyUnreadable, MediaTypeUnsupported, PollMismatch

VOTE_ID = "5f0e1c52-4b0e-4f5e-9d36-2a4f3f0c7a11"


@pytest.mark.parametrize(
    "body, ballot",
    [
        (b'{"option": 2}', Ballot(options=(2,))),
        (b'{"poll_id": 7, "option": 2, "padding": [1]}', Ballot(options=(2,))),
        (b'{"options": [1, 3]}', Ballot(options=(1, 3))),
        (b'{"option": 100000000000000000000000}', Ballot(options=(10**23,))),  # refused later: no such option
        (b'{"option": 1, "vote_id": "%s"}' % VOTE_ID.encode(), Ballot(options=(1,), vote_id=uuid.UUID(VOTE_ID))),
        (
            b'{"option": 1, "vote_id": "{%s}"}' % VOTE_ID.replace("-", "").encode(),
            Ballot(options=(1,), vote_id=uuid.UUID(VOTE_ID)),
        ),
        (b'{"option": 1, "vote_id": 5}', Ballot(options=(1,), vote_id=uuid.UUID(int=5))),
    ],
)
def test_a_ballot_is_read_from_the_body(body, ballot):
    assert ballot_read(body=body, content_type="application/json", poll_id=7) == ballot


@pytest.mark.parametrize(
    "body, errors",
    [
        (b"", {"option": ["This field is required."]}),
        (b"{}", {"option": ["This field is required."]}),
        (b"null", {"non_field_errors": ["No data provided"]}),
        (b"[1]", {"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]}),
        (b'{"option": 1, "options": [1]}', {"option": ["Give option (one choice) or options (a list), not both."]}),
        (
            b'{"option": 1.0, "poll_id": true}',
            {"option": ["A valid integer is required."], "poll_id": ["A valid integer is required."]},
        ),
        (b'{"option": 1e400}', {"option": ["A valid integer is required."]}),
        (b'{"option": null}', {"option": ["This field is required."]}),  # null: left out
        (b'{"option": null, "options": [2]}', None),
        (
            b'{"options": [1, "x", null]}',
            {"options": {"1": ["A valid integer is required."], "2": ["This field may not be null."]}},
        ),
        (b'{"options": "12"}', {"options": ['Expected a list of items but got type "str".']}),
        (b'{"options": []}', {"options": ["Ensure this field has at least 1 elements."]}),
        (
            b'{"options": [%s]}' % b",".join([b"1"] * 101),
            {"options": ["Ensure this field has no more than 100 elements."]},
        ),
        (b'{"option": 1, "vote_id": "nope"}', {"vote_id": ["Must be a valid UUID."]}),
    ],
)
def test_a_wrong_field_is_named_with_the_serializers_message(body, errors):
    if errors is None:
        assert ballot_read(body=body, content_type="application/json", poll_id=7) == Ballot(options=(2,))
        return
    with pytest.raises(BallotInvalid) as refused:
        ballot_read(body=body, content_type="application/json", poll_id=7)
    assert refused.value.errors == errors


def test_a_body_naming_another_poll_is_a_mismatch():
    with pytest.raises(PollMismatch, match="Does not match the poll in the path: 8 != 7."):
        ballot_read(body=b'{"option": 1, "poll_id": 8}', content_type="application/json", poll_id=7)


@pytest.mark.parametrize(
    "body, message",
    [
        (b'{"option": 1', "JSON parse error - Expecting ',' delimiter: line 1 column 13 (char 12)"),
        (b'{"option": NaN}', "JSON parse error - Out of range float values are not JSON compliant: 'NaN'"),
        (
            b'{"option": 1, "x": "\xff"}',
            "JSON parse error - 'utf-8' codec can't decode byte 0xff in position 20: invalid start byte",
        ),
    ],
)
def test_a_body_that_is_not_json_is_refused_with_the_parsers_message(body, message):
    with pytest.raises(BodyUnreadable, match="^JSON parse error") as refused:
        ballot_read(body=body, content_type="application/json", poll_id=7)
    assert str(refused.value) == message


def test_only_json_bodies_are_read_but_an_empty_body_of_any_type_is_an_empty_object():
    assert ballot_read(body=b'{"option": 1}', content_type="application/json; charset=utf-8", poll_id=1).options == (1,)
    assert ballot_read(body=b'{"option": 1}', content_type="application/*", poll_id=1).options == (1,)
    with pytest.raises(MediaTypeUnsupported, match='"text/plain"'):
        ballot_read(body=b'{"option": 1}', content_type="text/plain", poll_id=1)
    with pytest.raises(BallotInvalid):
        ballot_read(body=b"", content_type="text/plain", poll_id=1)
    with pytest.raises(BodyUnreadable, match='Unsupported charset "bz2"'):
        ballot_read(body=b'{"option": 1}', content_type="application/json; charset=bz2", poll_id=1)


def test_the_idempotency_key_is_the_header_else_the_vote_id():
    ballot = Ballot(options=(1,), vote_id=uuid.UUID(VOTE_ID))
    assert idempotency_key(header="retry-1", ballot=ballot) == "retry-1"
    assert idempotency_key(header="", ballot=ballot) == VOTE_ID
    assert idempotency_key(header=None, ballot=Ballot(options=(1,))) is None
    with pytest.raises(BallotInvalid) as refused:
        idempotency_key(header="k" * 201, ballot=ballot)
    assert refused.value.errors == {"Idempotency-Key": ["Must be 1 to 200 characters."]}
