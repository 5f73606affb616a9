"""Strict input handling shared by the APIs: JSON types are not coerced.

DRF's fields follow HTML forms by default: "1" becomes 1, 0 becomes "0", and an empty
query parameter means "use the default". A JSON API that publishes what it accepts to a
log should refuse all of these with a clear 400 instead.
"""

from __future__ import annotations

from rest_framework import serializers
from rest_framework.request import Request


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
