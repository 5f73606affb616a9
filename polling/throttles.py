"""Rate limits, counted in the shared cache so that they hold across processes.

A fixed window per scope and client: `cache.add` starts the window, `cache.incr` counts
atomically (Redis INCR when REDIS_URL is set). Venues behind one NAT share an address,
so the per-address limits are generous and the per-voter ones strict.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.core.cache import caches
from rest_framework.throttling import BaseThrottle

from polls.voters import COOKIE_NAME, HEADER, client_address_key, voter_token_read

logger = logging.getLogger(__name__)

_PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


def parse_rate(rate: str | None) -> tuple[int, int] | None:
    """'60/min' -> (60, 60); empty or '0' disables the limit."""
    if not rate or rate.strip() in {"0", "off", "none"}:
        return None
    count, _, period = rate.partition("/")
    return int(count), _PERIODS[period.strip().lower()]


class FixedWindowThrottle(BaseThrottle):
    scope = ""
    setting = ""

    def __init__(self) -> None:
        self.rate = parse_rate(getattr(settings, self.setting))
        self.wait_seconds: float | None = None

    def identity(self, request) -> str | None:
        raise NotImplementedError

    def allow_request(self, request, view) -> bool:
        if self.rate is None:
            return True
        ident = self.identity(request)
        if ident is None:
            return True
        limit, period = self.rate
        now = time.time()
        window = int(now // period)
        key = f"throttle:{self.scope}:{ident}:{window}"
        cache = caches[settings.RATE_LIMIT_CACHE]
        try:
            cache.add(key, 0, timeout=period + 1)
            try:
                count = cache.incr(key)
            except ValueError:  # expired between add and incr
                cache.add(key, 1, timeout=period + 1)
                count = 1
        except Exception as exc:  # noqa: BLE001 - any failure of the cache backend
            # Redis is down: voting must keep working (found by tests/faults), so the
            # limit is not checked rather than every vote failing with a 500.
            logger.warning("rate limit %s not checked, the cache is unavailable: %r", self.scope, exc)
            return True
        if count > limit:
            self.wait_seconds = (window + 1) * period - now
            return False
        return True

    def wait(self) -> float | None:
        return self.wait_seconds


class VoteAddressRateThrottle(FixedWindowThrottle):
    scope = "vote-address"
    setting = "RATE_LIMIT_VOTES_PER_ADDRESS"

    def identity(self, request):
        return client_address_key(request.META.get("REMOTE_ADDR") or "unknown")


class VoteVoterRateThrottle(FixedWindowThrottle):
    scope = "vote-voter"
    setting = "RATE_LIMIT_VOTES_PER_VOTER"

    def identity(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return f"user:{user.pk}"
        signed = request.META.get(HEADER) or request.COOKIES.get(COOKIE_NAME)
        token_id = voter_token_read(signed) if signed else None
        return f"voter:{token_id}" if token_id else None


class PollCreateRateThrottle(FixedWindowThrottle):
    scope = "poll-create"
    setting = "RATE_LIMIT_POLLS_PER_ADDRESS"

    def identity(self, request):
        return client_address_key(request.META.get("REMOTE_ADDR") or "unknown")
