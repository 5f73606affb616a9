"""The vote's request read into a ballot: one implementation for every way a vote comes in.

The lean path (polls.api.vote_intake) and the DRF view (polls.api.apis.PollVoteApi) both call
`ballot_read` with the raw body, so both accept and refuse the same bodies with the same
answers. The messages are those the DRF serializer of the vote gave, field by field, so
clients written against it see no change.
"""

from __future__ import annotations

import codecs
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec
from django.utils.http import parse_header_parameters
from rest_framework.utils.mediatypes import media_type_matches

from polls.domain.exceptions import BallotInvalid, BodyUnreadable, MediaTypeUnsupported, PollMismatch

MAX_CHOICES = 100
MAX_IDEMPOTENCY_KEY = 200

_REQUIRED = "This field is required."
_NULL = "This field may not be null."
_NOT_INT = "A valid integer is required."
# A run of 19 digits or more: a number past 64 bits, which the standard parser decides (see _decode).
_LONG_NUMBER = re.compile(rb"[0-9]{19}")


@dataclass(frozen=True, slots=True)
class Ballot:
    options: tuple[int, ...]
    vote_id: uuid.UUID | None = None


def ballot_read(*, body: bytes, content_type: str, poll_id: int) -> Ballot:
    """The ballot in a vote's body for the poll in the path.

    Raises MediaTypeUnsupported (415), BodyUnreadable (400, not JSON), BallotInvalid
    (400, with the wrong fields) or PollMismatch (409). An empty body is an empty object,
    whatever its type; a null option or options is the same as one left out.
    """
    data = _decode(body, content_type) if body else {}
    ballot, given_poll_id = _check(data)
    if given_poll_id is not None and given_poll_id != poll_id:
        raise PollMismatch(given_poll_id, poll_id)
    return ballot


def idempotency_key(*, header: str | None, ballot: Ballot) -> str | None:
    """The ballot's idempotency key: the Idempotency-Key header, else its vote_id."""
    key = header or (str(ballot.vote_id) if ballot.vote_id is not None else None)
    if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        raise BallotInvalid({"Idempotency-Key": [f"Must be 1 to {MAX_IDEMPOTENCY_KEY} characters."]})
    return key


def _decode(body: bytes, content_type: str) -> Any:
    if not media_type_matches("application/json", content_type):
        raise MediaTypeUnsupported(content_type)
    encoding = _charset(content_type)
    if encoding == "utf-8" and not _LONG_NUMBER.search(body):
        try:
            return msgspec.json.decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError):
            pass  # the standard parser decides, and says what is wrong
    # What the standard parser accepts beyond msgspec (numbers past 64 bits or a double)
    # is decided, and refused, as before: the same data and messages.
    try:
        "".encode(encoding)  # only text codecs: a bytes-to-bytes one could expand without bound
    except (LookupError, UnicodeError):
        raise BodyUnreadable(f'Unsupported charset "{encoding}" in request Content-Type header.') from None
    try:
        return json.loads(body.decode(encoding), parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise BodyUnreadable(f"JSON parse error - {exc}") from None


def _charset(content_type: str) -> str:
    if "charset" not in content_type.lower():
        return "utf-8"
    charset = parse_header_parameters(content_type)[1].get("charset")
    try:
        codecs.lookup(charset)
    except (LookupError, TypeError):
        return "utf-8"  # as Django: an unknown charset is ignored
    return charset


def _refuse_constant(name: str):
    raise ValueError(f"Out of range float values are not JSON compliant: {name!r}")


def _check(data: Any) -> tuple[Ballot, int | None]:
    if not isinstance(data, dict):
        if data is None:
            raise BallotInvalid({"non_field_errors": ["No data provided"]})
        raise BallotInvalid(
            {"non_field_errors": [f"Invalid data. Expected a dictionary, but got {type(data).__name__}."]}
        )
    errors: dict[str, Any] = {}
    option = _field(data, "option", _nullable(_integer), errors)
    options = _field(data, "options", _nullable(_integers), errors)
    poll_id = _field(data, "poll_id", _integer, errors)
    vote_id = _field(data, "vote_id", _uuid, errors)
    if errors:
        raise BallotInvalid(errors)
    if (option is None) == (options is None):
        raise BallotInvalid(
            {"option": ["Give option (one choice) or options (a list), not both." if option is not None else _REQUIRED]}
        )
    return Ballot(options=(option,) if options is None else tuple(options), vote_id=vote_id), poll_id


class _Wrong(Exception):
    def __init__(self, messages: list | dict) -> None:
        self.messages = messages


def _field(data: dict, name: str, read, errors: dict) -> Any:
    """The field read by `read`; None when absent, or wrong (its messages then in `errors`)."""
    if name not in data:
        return None
    try:
        return read(data[name])
    except _Wrong as wrong:
        errors[name] = wrong.messages
        return None


def _nullable(read):
    """`read`, with null read as None (the same as left out)."""
    return lambda value: None if value is None else read(value)


def _integer(value: Any) -> int:
    if value is None:
        raise _Wrong([_NULL])
    if type(value) is not int:  # a JSON number: not "1", 1.0 or true
        raise _Wrong([_NOT_INT])
    return value


def _integers(value: Any) -> list[int]:
    if value is None:
        raise _Wrong([_NULL])
    if not isinstance(value, list):
        raise _Wrong([f'Expected a list of items but got type "{type(value).__name__}".'])
    wrong = {}
    for index, item in enumerate(value):
        try:
            _integer(item)
        except _Wrong as error:
            wrong[str(index)] = error.messages
    if wrong:
        raise _Wrong(wrong)
    if not value:
        raise _Wrong(["Ensure this field has at least 1 elements."])
    if len(value) > MAX_CHOICES:
        raise _Wrong([f"Ensure this field has no more than {MAX_CHOICES} elements."])
    return value


def _uuid(value: Any) -> uuid.UUID:
    if value is None:
        raise _Wrong([_NULL])
    try:
        # As the serializer read it: a string in any form uuid.UUID takes, or an integer.
        if isinstance(value, int):
            return uuid.UUID(int=value)
        if isinstance(value, str):
            return uuid.UUID(hex=value)
    except ValueError:
        pass
    raise _Wrong(["Must be a valid UUID."])
