"""polling.strict.validated_data: a serializer's data, or its 400, with no reference cycle left."""

from __future__ import annotations

import gc
import weakref

import pytest
from rest_framework import serializers

from polling.strict import StrictIntegerField, validated_data


class Nested(serializers.Serializer):
    label = serializers.CharField()


class Body(serializers.Serializer):
    option = StrictIntegerField()
    options = serializers.ListField(child=StrictIntegerField(), required=False)
    tags = serializers.DictField(child=serializers.CharField(), required=False)
    nested = Nested(required=False)
    many = Nested(many=True, required=False)


@pytest.fixture
def no_collections():
    """Only reference counting frees objects while the test runs."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_gives_the_validated_data_and_frees_the_serializer_with_its_last_reference(no_collections):
    serializer = Body(
        data={"option": 1, "options": [2, 3], "tags": {"a": "b"}, "nested": {"label": "x"}, "many": [{"label": "y"}]}
    )
    fields = serializer.fields
    field_refs = [weakref.ref(f) for f in (*fields.values(), fields["options"].child, fields["many"].child)]
    serializer_ref = weakref.ref(serializer)

    data = validated_data(serializer)

    assert data == {
        "option": 1,
        "options": [2, 3],
        "tags": {"a": "b"},
        "nested": {"label": "x"},
        "many": [{"label": "y"}],
    }
    del serializer, fields
    assert serializer_ref() is None, "the serializer outlived its last reference (a cycle is left)"
    assert [ref() for ref in field_refs] == [None] * len(field_refs)


def test_invalid_data_raises_the_serializers_errors():
    with pytest.raises(serializers.ValidationError) as raised:
        validated_data(Body(data={"option": "1", "options": []}))
    assert raised.value.detail == {"option": ["A valid integer is required."]}
