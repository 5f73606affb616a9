"""Liveness (/healthz) and readiness (/readyz) for load balancers, orchestrators, compose.

``/healthz`` answers 200 while the process serves requests and touches nothing else.
``/readyz`` checks that each service this process is configured to use answers: the
database always, Redis when REDIS_URL is set, and those the apps add with
readiness_check_add (polls: Kafka and its vote topic, when KAFKA_BROKERS is set). The
checks run side by side, each bounded by READYZ_TIMEOUT seconds, so a hung dependency
costs a probe that long and no more.

Redis is checked over a connection pool kept between probes, so a probe costs one
round trip, not a new handshake.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import redis
from django.conf import settings
from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from polling.metrics import metrics_view

logger = logging.getLogger(__name__)

# One thread per check: a check that hangs past its timeout keeps its thread until it
# returns, and the next probe waits on that same attempt (see _single_flight) rather
# than stacking up new ones.
_executor = ThreadPoolExecutor(max_workers=3, thread_name_prefix="readyz")
_inflight: dict[str, Future] = {}
_inflight_lock = threading.Lock()

_redis_client = None
_redis_lock = threading.Lock()
# The checks the apps added (readiness_check_add): name -> (check, whether it applies now).
_app_checks: dict[str, tuple[Callable[[float], None], Callable[[], bool]]] = {}


def check_database(timeout: float) -> None:
    connection = connections["default"]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        # This runs on a probe thread, outside any request: nothing else would close it.
        connection.close()


def check_redis(timeout: float) -> None:
    global _redis_client
    with _redis_lock:
        url = settings.REDIS_URL
        if _redis_client is None or _redis_client[0] != url:
            # A pool of its own: the probe must not wait behind (or disturb) the channel
            # layer's connections, and a broken connection is replaced on the next ping.
            _redis_client = (url, redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout))
        client = _redis_client[1]
    client.ping()


def readiness_check_add(name: str, check: Callable[[float], None], *, configured: Callable[[], bool]) -> None:
    """Add the check of a service an app uses (call it from the app's AppConfig.ready()).

    `check(timeout)` raises when the service does not answer; `configured()` says whether
    this process uses the service now (read at each probe, as the settings may change).
    """
    _app_checks[name] = (check, configured)


def configured_checks() -> dict[str, Callable[[float], None]]:
    """The checks for the services this process is configured to use."""
    checks: dict[str, Callable[[float], None]] = {"database": check_database}
    checks.update((name, check) for name, (check, configured) in _app_checks.items() if configured())
    if settings.REDIS_URL:
        checks["redis"] = check_redis
    return checks


def _single_flight(name: str, check: Callable[[float], None], timeout: float) -> Future:
    """The running attempt of this check if one is still out, else a new one."""
    with _inflight_lock:
        future = _inflight.get(name)
        if future is None or future.done():
            future = _executor.submit(_timed, check, timeout)
            _inflight[name] = future
        return future


def _timed(check: Callable[[float], None], timeout: float) -> float:
    started = time.perf_counter()
    check(timeout)
    return time.perf_counter() - started


def readiness(timeout: float | None = None) -> dict[str, dict]:
    """Run every configured check at once; the result of each, within about `timeout`."""
    timeout = settings.READYZ_TIMEOUT if timeout is None else timeout
    futures = {name: _single_flight(name, check, timeout) for name, check in configured_checks().items()}
    deadline = time.monotonic() + timeout
    results: dict[str, dict] = {}
    for name, future in futures.items():
        try:
            seconds = future.result(timeout=max(deadline - time.monotonic(), 0))
        except FutureTimeout:
            results[name] = {"ok": False, "error": f"no answer within {timeout:g} s"}
            logger.warning("readiness: %s did not answer within %g s", name, timeout)
        except Exception as exc:  # noqa: BLE001 - a check's failure is reported, whatever it is
            # The client gets the kind of failure; the log gets the detail (addresses
            # and messages are for operators, not for whoever can reach /readyz).
            results[name] = {"ok": False, "error": type(exc).__name__}
            logger.warning("readiness: %s is down: %s: %s", name, type(exc).__name__, exc)
        else:
            results[name] = {"ok": True, "ms": round(seconds * 1000, 1)}
    return results


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and serving requests; says nothing about its dependencies."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """200 when every configured service answers, else 503 naming those that do not."""
    checks = readiness()
    down = sorted(name for name, result in checks.items() if not result["ok"])
    if down:
        return JsonResponse({"status": "unavailable", "down": down, "checks": checks}, status=503)
    return JsonResponse({"status": "ok", "checks": checks})


PROBE_PATHS = {"/healthz": healthz, "/readyz": readyz, "/metrics": None}


class ProbeMiddleware:
    """Answers /healthz, /readyz and /metrics ahead of the Host header check.

    Orchestrators probe a container and Prometheus scrapes it by IP address, which
    ALLOWED_HOSTS rarely lists, so through the normal stack every probe would be a
    400. These answers build no URL from the Host header, which is what that check
    protects. Place it right after RequestMetricsMiddleware.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path_info in PROBE_PATHS and request.method in ("GET", "HEAD"):
            view = PROBE_PATHS[request.path_info] or metrics_view
            return view(request)
        return self.get_response(request)
