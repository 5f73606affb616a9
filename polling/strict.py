"""Strict input handling shared by the APIs: JSON types are not coerced.

DRF's fields follow HTML forms by default: "1" becomes 1, 0 becomes "0", and an empty
query parameter means "use the default". A JSON API that publishes what it accepts to a
log should refuse all of these with a clear 400 instead.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

from rest_framework import serializers
from rest_framework.request import Request

# Deepest nesting of arrays and objects a client's JSON may have: the API's bodies nest
# two levels, and Python's parser recurses per level until a RecursionError (a 500).
JSON_MAX_DEPTH = 32
TOO_DEEP = f"JSON nested deeper than {JSON_MAX_DEPTH} levels (arrays and objects) is refused."


class JSONTooDeep(ValueError):
    def __init__(self) -> None:
        super().__init__(TOO_DEEP)


# A JSON string, escapes and all. The closing quote is optional so that an unterminated
# string ends the scan instead of making the search start again at every later quote.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))
# +1 for an opening bracket, -1 for a closing one, by byte value.
_STEP = [1 if byte in b"[{" else -1 if byte in b"]}" else 0 for byte in range(256)]


def json_too_deep(data: bytes | str, limit: int = JSON_MAX_DEPTH) -> bool:
    """Whether the JSON text nests arrays and objects deeper than `limit`, read without parsing it.

    Brackets inside strings do not count. Text with no more opening brackets than the
    limit is answered by counting alone, which is what nearly every request has.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > limit


def json_loads(data: bytes | str) -> Any:
    """json.loads that refuses (JSONTooDeep, a ValueError) JSON nested deeper than JSON_MAX_DEPTH."""
    if json_too_deep(data):
        raise JSONTooDeep()
    try:
        return json.loads(data)
    except RecursionError:  # only where the interpreter's recursion limit is set very low
        raise JSONTooDeep() from None


class StrictIntegerField(serializers.IntegerField):
    """An integer that must be a JSON number: "1", 1.0 and true are refused."""

    def to_internal_value(self, data):
        if type(data) is not int:
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """A string that must be a JSON string: 0 and false are refused, not turned into "0"."""

    default_error_messages = {"invalid": "Not a valid string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def validated_data(serializer: serializers.BaseSerializer) -> dict:
    """The serializer's validated data (a 400 with its errors if invalid), its reference cycles undone.

    A serializer and its fields refer to each other (`serializer.fields` holds each field,
    `field.parent` is the serializer, a list field and its child likewise), so a spent
    serializer waits for the garbage collector instead of going with its last reference.
    That was one of the five cycles a vote left; polling.handlers undoes the other four.
    """
    serializer.is_valid(raise_exception=True)
    data = serializer.validated_data
    _unbind(serializer)
    return data


def _unbind(field: serializers.Field) -> None:
    field.parent = None
    for child in (getattr(field, "child", None), getattr(field, "child_relation", None)):
        if child is not None:
            _unbind(child)
    fields = field.__dict__.pop("fields", None)  # Serializer.fields is a cached_property
    if fields is not None:
        fields.serializer = None
        for nested in fields.values():
            _unbind(nested)


def query_data(request: Request) -> dict[str, str]:
    """Query parameters as a plain dict, so that an empty value is validated, not defaulted."""
    return request.query_params.dict()
