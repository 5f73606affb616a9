"""Rate limits, counted in the shared cache so that they hold across processes.

A fixed window per scope and client, counted in Redis when REDIS_URL is set (in the
process's own cache otherwise). Venues behind one NAT share an address, so the
per-address limits sit beyond what any audience sends and the per-voter ones are
strict (the defaults and the rates they allow: settings.RATE_LIMIT_DEFAULTS,
docs/audience.md).

With Redis, a request is decided in process and its count reaches Redis in the
background (SharedWindowCounts), so no request waits for a round trip
(docs/decisions/0005-vote-checks-off-the-hot-path.md; what it allows: docs/api.md).
RATE_LIMIT_SYNC_MS=0 counts in Redis during the request instead.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from math import ceil

from django.conf import settings
from django.core.cache import caches
from rest_framework.throttling import BaseThrottle

from polling.env import parse_rate
from polling.metrics import rate_limits_synced

logger = logging.getLogger(__name__)


class FixedWindowThrottle(BaseThrottle):
    scope = ""
    setting = ""

    def __init__(self) -> None:
        self.rate = parse_rate(getattr(settings, self.setting))
        self.wait_seconds: float | None = None

    def identity(self, request) -> str | None:
        raise NotImplementedError

    def window(self, request, now: float) -> tuple[str, int, float] | None:
        """(cache key of the current window, limit, seconds to the next window), or None: not limited."""
        if self.rate is None:
            return None
        ident = self.identity(request)
        if ident is None:
            return None
        limit, period = self.rate
        window = int(now // period)
        return f"throttle:{self.scope}:{ident}:{window}", limit, (window + 1) * period - now

    def allow_request(self, request, view) -> bool:
        return throttles_check([self], request) is None

    def wait(self) -> float | None:
        return self.wait_seconds


def throttles_check(throttles, request) -> float | None:
    """Count the request in every throttle's window; the longest wait of those exceeded, or None.

    Every request is counted, refused ones too. With the counts shared in the
    background (SharedWindowCounts) nothing here waits for Redis; counted in Redis
    during the request (RATE_LIMIT_SYNC_MS=0), a failure of the cache lets the request
    through (Redis down: votes go on).
    """
    now = time.time()
    windows = [(throttle, throttle.window(request, now)) for throttle in throttles]
    windows = [(throttle, window) for throttle, window in windows if window is not None]
    if not windows:
        return None
    cache = caches[settings.RATE_LIMIT_CACHE]
    try:
        counts = _count(cache, [(key, ceil(wait) + 1) for _, (key, _, wait) in windows])
    except Exception as exc:  # noqa: BLE001 - any failure of the cache backend
        # Redis is down: voting must keep working (found by tests/faults), so the
        # limit is not checked rather than every vote failing with a 500.
        logger.warning(
            "rate limits %s not checked, the cache is unavailable: %r",
            ", ".join(throttle.scope for throttle, _ in windows),
            exc,
        )
        return None
    waits = []
    for (throttle, (_, limit, wait)), count in zip(windows, counts):
        throttle.wait_seconds = wait if count > limit else None
        if count > limit:
            waits.append(wait)
    return max(waits) if waits else None


def throttles_wait_for_cache() -> bool:
    """Whether throttles_check waits for Redis (RATE_LIMIT_SYNC_MS=0): then not on an event loop."""
    return settings.RATE_LIMIT_SYNC_MS <= 0 and hasattr(caches[settings.RATE_LIMIT_CACHE], "incr_many")


def _count(cache, keys: list[tuple[str, int]]) -> list[int]:
    """Add one to each (key, expiry seconds) counter; return the counts to decide on."""
    if not hasattr(cache, "incr_many"):  # polling.cache.SharedClientRedisCache
        # The per-process cache of the embedded mode: no round trips to save.
        return [_add_one(cache, key, expiry) for key, expiry in keys]
    if settings.RATE_LIMIT_SYNC_MS <= 0:
        # In Redis during the request: one pipeline of INCRBY and EXPIRE per key. The
        # window is in the key, so refreshing the expiry on every hit only keeps an old
        # window's key until `expiry` seconds after its last request: harmless.
        return cache.incr_many([(key, 1, expiry) for key, expiry in keys])
    return _shared_counts(cache).add(keys)


def _add_one(cache, key: str, expiry: int) -> int:
    cache.add(key, 0, timeout=expiry)
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=expiry)
        return 1


class SharedWindowCounts:
    """Rate-limit windows counted in this process and added to Redis in the background.

    A request is decided at once, on the count Redis returned at the last sync plus this
    process's requests since, and waits for nothing. A thread adds those requests to
    Redis (one pipeline of INCRBY for every window touched) at most every `interval`
    seconds and keeps the totals Redis returns, which include the other processes'.

    What it allows: in one process the count is exact. A process learns what the others
    counted in a window at its own syncs, so once the others have filled the window it
    can still let through the requests it decides before its next sync (one interval
    and a round trip after the first of them); from then on it refuses, as a window's
    count only grows. While Redis is down the limits hold per process; the counts are
    sent when it is back.
    """

    # After a failed sync, wait this long before trying again (requests are not held).
    RETRY_SECONDS = 1.0
    # Most windows held (about 360 bytes each): past it the least recently used are
    # forgotten (with any count not yet sent, which they seldom have: they sync every
    # interval while used), and a client's next request in a forgotten window is decided
    # as in a process that never saw it. Minute windows at 250 requests a second hold 30,000.
    MAX_WINDOWS = 100_000

    def __init__(self, cache, *, interval: float) -> None:
        self._cache = cache
        self.interval = interval
        self._lock = threading.Lock()  # the three dicts below
        self._sync_lock = threading.Lock()  # one sync at a time
        self._shared: dict[str, int] = {}  # the key's count in Redis at the last sync
        self._unsynced: dict[str, int] = {}  # this process's requests not yet in Redis
        # key -> (expiry seconds, forget after (monotonic)), least recently used first
        self._windows: collections.OrderedDict[str, tuple[int, float]] = collections.OrderedDict()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._failing = False

    def add(self, keys: list[tuple[str, int]]) -> list[int]:
        """Count one request in each (key, expiry seconds) window; the counts to decide on."""
        now = time.monotonic()
        counts = []
        with self._lock:
            for key, expiry in keys:
                unsynced = self._unsynced.get(key, 0) + 1
                self._unsynced[key] = unsynced
                self._windows[key] = (expiry, now + expiry)
                self._windows.move_to_end(key)
                counts.append(self._shared.get(key, 0) + unsynced)
        if self._pid != os.getpid():
            self._start()
        if not self._wake.is_set():  # set() takes a lock and notifies: once per interval is enough
            self._wake.set()
        return counts

    def sync(self) -> bool:
        """Add this process's new requests to Redis and keep the totals; False if Redis failed."""
        with self._sync_lock:
            with self._lock:
                sent = [(key, amount, self._windows[key][0]) for key, amount in self._unsynced.items()]
            totals = []
            if sent:
                try:
                    totals = self._cache.incr_many(sent)
                except Exception as exc:  # noqa: BLE001 - any failure of the cache backend
                    # The counts are sent again at the next sync. Part of the pipeline
                    # may have been applied before the failure and is then counted
                    # twice: a failure errs on the strict side.
                    rate_limits_synced(ok=False)
                    if not self._failing:
                        logger.warning(
                            "rate-limit counts not shared, the cache is unavailable "
                            "(limits hold per process until it is back): %r",
                            exc,
                        )
                    self._failing = True
                    return False
                rate_limits_synced(ok=True)
                if self._failing:
                    logger.warning("rate-limit counts shared again")
                    self._failing = False
            with self._lock:
                for (key, amount, _), total in zip(sent, totals):
                    left = self._unsynced.get(key, 0) - amount
                    if left > 0:
                        self._unsynced[key] = left
                    else:
                        self._unsynced.pop(key, None)
                    self._shared[key] = total
                self._forget_ended()
            return True

    def _forget_ended(self) -> None:
        """Forget the windows that have ended, and the least recently used past MAX_WINDOWS.

        A window's key is not used after it ends (the next window has a key of its own),
        so ended windows gather at the least recently used end, where this starts; it
        stops at the first window still running, so a call costs what it forgets.
        """
        now = time.monotonic()
        while self._windows:
            key, (_, forget_after) = next(iter(self._windows.items()))
            if forget_after >= now and len(self._windows) <= self.MAX_WINDOWS:
                break
            del self._windows[key]
            self._shared.pop(key, None)
            self._unsynced.pop(key, None)

    def forget_all(self) -> None:
        """Drop every count this process holds, after any sync in flight (tests clear Redis after)."""
        with self._sync_lock, self._lock:
            self._shared.clear()
            self._unsynced.clear()
            self._windows.clear()

    def windows(self) -> int:
        with self._lock:
            return len(self._windows)

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()  # a forked child starts its own thread
            self._thread = threading.Thread(target=self._run, daemon=True, name="rate-limit-sync")
            self._thread.start()

    def close(self) -> None:
        """Stop the sync thread (counts not yet sent stay unsent)."""
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if self._closed.wait(self.interval):  # let the requests of this interval gather
                return
            self._wake.clear()
            if not self.sync():
                if self._closed.wait(self.RETRY_SECONDS):
                    return
                self._wake.set()  # the counts are still to be sent


_shared_counts_by_cache: dict[str, SharedWindowCounts] = {}
_shared_counts_lock = threading.Lock()


def _shared_counts(cache) -> SharedWindowCounts:
    alias = settings.RATE_LIMIT_CACHE
    counts = _shared_counts_by_cache.get(alias)
    if counts is None:
        with _shared_counts_lock:
            counts = _shared_counts_by_cache.get(alias)
            if counts is None:
                counts = _shared_counts_by_cache[alias] = SharedWindowCounts(
                    cache, interval=settings.RATE_LIMIT_SYNC_MS / 1000
                )
    return counts


def throttles_forget() -> None:
    """Forget this process's rate-limit counts (a test clears the shared cache right after)."""
    with _shared_counts_lock:
        for counts in _shared_counts_by_cache.values():
            counts.forget_all()


class PipelinedThrottlesMixin:
    """An APIView's throttles counted together, in one round trip to the cache.

    DRF asks each throttle in turn (two limits on a vote: two round trips, four with
    Django's add + incr); this counts them all in one pipeline and answers 429 with the
    longest wait, as DRF does.
    """

    def check_throttles(self, request):
        wait = throttles_check(self.get_throttles(), request)
        if wait is not None:
            self.throttled(request, wait)
