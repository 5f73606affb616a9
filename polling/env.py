"""Typed readers for settings that come from the environment.

Every setting of the project is read through these helpers so that a bad or missing
value fails at start with a message naming the variable, not later with a KeyError.
"""

from __future__ import annotations

import ipaddress
import os

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_RATE_OFF = {"", "0", "off", "none"}
_RATE_PERIODS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
}


def env_str(name: str, default: str | None = None, *, required: bool = False) -> str | None:
    value = os.environ.get(name)
    if value is None or value == "":
        if required:
            raise ImproperlyConfigured(f"The environment variable {name} is required but not set.")
        return default
    return value


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean: use 1/0, true/false, yes/no or on/off.")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer.") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} is below its minimum of {minimum}.")
    return number


def env_float(name: str, default: float, *, minimum: float | None = None, maximum: float | None = None) -> float:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a number.") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} is below its minimum of {minimum}.")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name}={number} is above its maximum of {maximum}.")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_networks(name: str, default: list[str]) -> list[str]:
    """Addresses and networks ("127.0.0.1", "10.0.0.0/8", "::1"), checked at start; "none": an empty list."""
    value = os.environ.get(name)
    if value is not None and value.strip().lower() == "none":
        return []
    items = env_list(name, default)
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {item!r} is not an IP address or network (10.0.0.0/8).") from None
    return items


def parse_rate(rate: str | None) -> tuple[int, int] | None:
    """'60/min' -> (60, 60): a count and its window in seconds; empty, '0' or 'off' -> None.

    Raises ValueError naming what is wrong (env_rate turns it into ImproperlyConfigured).
    """
    if rate is None or rate.strip().lower() in _RATE_OFF:
        return None
    count, slash, period = rate.partition("/")
    seconds = _RATE_PERIODS.get(period.strip().lower())
    if not slash or seconds is None:
        raise ValueError("use <count>/<period>, the period one of s, min, hour or day (60/min); 0 turns it off")
    try:
        number = int(count)
    except ValueError:
        raise ValueError(f"{count.strip()!r} is not a whole number of requests") from None
    if number < 1:
        raise ValueError("the count must be at least 1 (0 turns the limit off)")
    return number, seconds


def env_rate(name: str, default: str) -> str:
    """A rate limit such as '60/min', checked at start; the text is kept for the throttles."""
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        parse_rate(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={value!r} is not a rate limit: {exc}.") from None
    return value
