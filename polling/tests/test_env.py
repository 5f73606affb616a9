"""Settings read from the environment: a bad value stops the start with its name."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from polling.env import env_float


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "WS_FANOUT_CPU_SHARE='abc' is not a number."),
        ("-0.5", "WS_FANOUT_CPU_SHARE=-0.5 is below its minimum of 0.0."),
        ("1.5", "WS_FANOUT_CPU_SHARE=1.5 is above its maximum of 1.0."),
    ],
)
def test_a_number_outside_its_range_names_the_setting_and_the_range(monkeypatch, value, message):
    monkeypatch.setenv("WS_FANOUT_CPU_SHARE", value)
    with pytest.raises(ImproperlyConfigured) as raised:
        env_float("WS_FANOUT_CPU_SHARE", 0.1, minimum=0.0, maximum=1.0)
    assert str(raised.value) == message


@pytest.mark.parametrize(("value", "expected"), [("0", 0.0), ("1", 1.0), ("0.25", 0.25), ("", 0.1)])
def test_a_number_within_its_range_or_unset_is_read(monkeypatch, value, expected):
    monkeypatch.setenv("WS_FANOUT_CPU_SHARE", value)
    assert env_float("WS_FANOUT_CPU_SHARE", 0.1, minimum=0.0, maximum=1.0) == expected
