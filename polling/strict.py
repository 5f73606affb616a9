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


def query_data(request: Request) -> dict[str, str]:
    """Query parameters as a plain dict, so that an empty value is validated, not defaulted."""
    return request.query_params.dict()
