"""Settings read from the environment: a bad value stops the start with its name."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from polling.env import env_float, env_rate, parse_rate


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


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("100/week", "use <count>/<period>, the period one of s, min, hour or day (60/min); 0 turns it off"),
        ("1000", "use <count>/<period>, the period one of s, min, hour or day (60/min); 0 turns it off"),
        ("1,200/min", "'1,200' is not a whole number of requests"),
        ("-5/min", "the count must be at least 1 (0 turns the limit off)"),
        ("0/min", "the count must be at least 1 (0 turns the limit off)"),
    ],
)
def test_a_rate_limit_that_is_not_one_stops_the_start_with_its_name(monkeypatch, value, message):
    """Parsed on every request, such a value once answered every vote with a 500."""
    monkeypatch.setenv("RATE_LIMIT_VOTES_PER_VOTER", value)
    with pytest.raises(ImproperlyConfigured) as raised:
        env_rate("RATE_LIMIT_VOTES_PER_VOTER", "60/min")
    assert str(raised.value) == f"RATE_LIMIT_VOTES_PER_VOTER={value!r} is not a rate limit: {message}."


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("60/min", (60, 60)),
        ("5/s", (5, 1)),
        ("100/day", (100, 86400)),
        (" 10 / Hour ", (10, 3600)),
        ("0", None),
        ("off", None),
        ("", (1200, 60)),
    ],
)
def test_a_rate_limit_is_read_as_a_count_and_its_window(monkeypatch, value, expected):
    monkeypatch.setenv("RATE_LIMIT_VOTES_PER_ADDRESS", value)
    assert parse_rate(env_rate("RATE_LIMIT_VOTES_PER_ADDRESS", "1200/min")) == expected
