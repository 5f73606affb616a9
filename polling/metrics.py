"""Prometheus metrics: definitions, the request middleware, vote intake hooks, /metrics.

Two registries, one per role, so that each process exposes only what it measures:
``WEB_REGISTRY`` is served by the web process at ``/metrics``; ``WORKER_REGISTRY`` by
``manage.py consume_votes --metrics-port N`` on a port of its own. Each also carries
the process, platform and GC collectors (CPU, memory, open files, Python version).

Every label takes values from a fixed set (view names from the urlconf, HTTP
methods and statuses, rejection reasons named by exception classes, partitions), so
a client cannot grow the series without bound by sending odd paths.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import time

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, resolve
from django.utils.crypto import constant_time_compare
from django.views.decorators.http import require_safe
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder, start_http_server


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


WEB_REGISTRY = _registry()
WORKER_REGISTRY = _registry()

# Seconds: from a cached-connection read (ms) to a request that waited out the vote
# publish timeout (VOTE_PUBLISH_TIMEOUT, 5 s by default).
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# --- Web: HTTP requests ---------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "polling_http_requests",
    "HTTP requests answered, by view (URL name), method and status.",
    ["view", "method", "status"],
    registry=WEB_REGISTRY,
)
HTTP_REQUEST_DURATION = Histogram(
    "polling_http_request_duration_seconds",
    "Time to answer an HTTP request, middleware included, by view, method and status.",
    ["view", "method", "status"],
    buckets=_LATENCY_BUCKETS,
    registry=WEB_REGISTRY,
)

# --- Web: vote intake -------------------------------------------------------------------

VOTES_ACCEPTED = Counter(
    "polling_votes_accepted",
    "Votes answered 204: durable on the vote bus (or a retry of one already counted).",
    registry=WEB_REGISTRY,
)
VOTES_REJECTED = Counter(
    "polling_votes_rejected",
    "Votes refused with a 4xx before anything was published, by reason.",
    ["reason"],
    registry=WEB_REGISTRY,
)
VOTES_UNAVAILABLE = Counter(
    "polling_votes_unavailable",
    "Votes answered 503 because the vote bus could not make them durable in time.",
    registry=WEB_REGISTRY,
)
VOTE_PUBLISH_DURATION = Histogram(
    "polling_vote_publish_duration_seconds",
    "Time for the vote bus to make one vote durable (Kafka: until acks=all), by outcome.",
    ["outcome"],
    buckets=_LATENCY_BUCKETS,
    registry=WEB_REGISTRY,
)
RATE_LIMIT_SYNCS = Counter(
    "polling_rate_limit_syncs",
    "Syncs of this process's rate-limit counts with the shared cache (Redis), by result: "
    "ok, or failed (the limits then hold per process, and the counts are sent once it is back).",
    ["result"],
    registry=WEB_REGISTRY,
)

# --- Worker -------------------------------------------------------------------------------

WORKER_BATCH_SIZE = Histogram(
    "polling_worker_batch_size",
    "Messages in one batch the vote worker applied.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
    registry=WORKER_REGISTRY,
)
WORKER_BATCH_DURATION = Histogram(
    "polling_worker_batch_duration_seconds",
    "Time to decode, apply (one transaction) and dead-letter one batch.",
    buckets=_LATENCY_BUCKETS,
    registry=WORKER_REGISTRY,
)
WORKER_VOTES_APPLIED = Counter(
    "polling_worker_votes_applied", "Votes the worker added to the counters.", registry=WORKER_REGISTRY
)
WORKER_VOTES_DUPLICATES = Counter(
    "polling_worker_votes_duplicates",
    "Redelivered or repeated votes the worker skipped (their vote_id was already applied).",
    registry=WORKER_REGISTRY,
)
WORKER_VOTES_DEAD_LETTERED = Counter(
    "polling_worker_votes_dead_lettered",
    "Messages sent to the dead-letter topic (malformed, or refused by the database).",
    registry=WORKER_REGISTRY,
)
WORKER_OFFSET_COMMIT_FAILURES = Counter(
    "polling_worker_offset_commit_failures",
    "Offset commits that failed after the batch was applied (the batch is redelivered).",
    registry=WORKER_REGISTRY,
)
WORKER_DATABASE_RETRIES = Counter(
    "polling_worker_database_retries",
    "Batch attempts retried because the database was unreachable.",
    registry=WORKER_REGISTRY,
)
WORKER_DEAD_LETTER_RETRIES = Counter(
    "polling_worker_dead_letter_retries",
    "Batches whose dead letters the broker did not take, sent again (their offsets wait).",
    registry=WORKER_REGISTRY,
)
WORKER_CONSUMER_LAG = Gauge(
    "polling_worker_consumer_lag",
    "Messages in a partition this worker holds that its group has not committed yet (end offset - committed offset).",
    ["topic", "partition"],
    registry=WORKER_REGISTRY,
)

WORKER_STALLS = Counter(
    "polling_worker_stalls",
    "Times votes waited WORKER_STALL_TIMEOUT seconds while the worker applied nothing.",
    registry=WORKER_REGISTRY,
)


def worker_batch_done(*, messages: int, applied: int, duplicates: int, dead_lettered: int, seconds: float) -> None:
    WORKER_BATCH_SIZE.observe(messages)
    WORKER_BATCH_DURATION.observe(seconds)
    WORKER_VOTES_APPLIED.inc(applied)
    WORKER_VOTES_DUPLICATES.inc(duplicates)
    WORKER_VOTES_DEAD_LETTERED.inc(dead_lettered)


def worker_lag_set(lags: dict[tuple[str, int], int]) -> None:
    """Publish the lag of the partitions this worker holds; forget the ones it lost."""
    current = {(topic, str(partition)) for topic, partition in lags}
    for labels in _lag_labels - current:
        WORKER_CONSUMER_LAG.remove(*labels)
    for (topic, partition), lag in lags.items():
        WORKER_CONSUMER_LAG.labels(topic, str(partition)).set(lag)
    _lag_labels.clear()
    _lag_labels.update(current)


_lag_labels: set[tuple[str, str]] = set()


def worker_metrics_serve(*, port: int, addr: str = "0.0.0.0"):
    """Serve WORKER_REGISTRY over HTTP from a daemon thread; return the server (call shutdown())."""
    server, _thread = start_http_server(port, addr=addr, registry=WORKER_REGISTRY)
    return server


# --- Vote intake: what the vote endpoint answered -----------------------------------------


def vote_accepted() -> None:
    VOTES_ACCEPTED.inc()


def vote_rejected(reason: str) -> None:
    VOTES_REJECTED.labels(reason).inc()


def vote_unavailable() -> None:
    VOTES_UNAVAILABLE.inc()


def vote_published(*, seconds: float, ok: bool) -> None:
    VOTE_PUBLISH_DURATION.labels("ok" if ok else "error").observe(seconds)


def rate_limits_synced(*, ok: bool) -> None:
    RATE_LIMIT_SYNCS.labels("ok" if ok else "failed").inc()


# --- HTTP request metrics --------------------------------------------------------------------

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "<unmatched>"


def view_label(request: HttpRequest) -> str:
    """The URL name of the view a request went to (or would have), bounded for labels."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        # Answered by a middleware before URL resolution (413, a probe): resolve here.
        try:
            match = resolve(request.path_info, getattr(request, "urlconf", None))
        except Resolver404:
            return UNMATCHED
    return match.view_name or match._func_path


access_logger = logging.getLogger("polling.access")


class RequestMetricsMiddleware:
    """Counts and times every HTTP request by view, method and status; writes the access log.

    First in MIDDLEWARE after the security headers, so the time includes the other
    middleware and the answers they give themselves (413 for a large body, a probe's
    answer). The access log goes
    through logging (JSON in production) in place of the server's own, which
    polling.serve turns off (uvicorn's access log). It leaves out the client's address,
    as the vote history does.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        request_observed(
            view=view_label(request),
            method=request.method,
            path=request.path,
            status=response.status_code,
            seconds=time.perf_counter() - started,
        )
        return response


# Each (view, method, status)'s counter and histogram, found once: the labels() lookup
# takes a lock and builds the key on every call.
_request_series: dict[tuple[str, str, int], tuple] = {}


def request_observed(*, view: str, method: str, path: str, status: int, seconds: float) -> None:
    """Count and time one answered HTTP request, and write its access-log line."""
    label = method if method in _METHODS else "other"
    series = _request_series.get((view, label, status))
    if series is None:
        labels = (view, label, str(status))
        series = _request_series[view, label, status] = (
            HTTP_REQUESTS.labels(*labels),
            HTTP_REQUEST_DURATION.labels(*labels),
        )
    series[0].inc()
    series[1].observe(seconds)
    if settings.ACCESS_LOG:
        access_logger.info(
            '"%s %s" %d %.1f ms',
            method,
            path,
            status,
            seconds * 1000,
            extra={
                "http": {
                    "method": method,
                    "path": path,
                    "status": status,
                    "view": view,
                    "duration_ms": round(seconds * 1000, 2),
                }
            },
        )


@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The web process's metrics in Prometheus' text format (OpenMetrics when asked), for operators only."""
    if not metrics_allowed(request):
        return JsonResponse({"detail": METRICS_REFUSED}, status=403)
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(WEB_REGISTRY), content_type=content_type)


METRICS_REFUSED = (
    "Metrics are served only to the addresses in METRICS_ALLOWED_ADDRESSES (loopback by default), "
    "not through a proxy, or with Authorization: Bearer <METRICS_TOKEN>."
)
# Headers a reverse proxy adds: behind one, the peer's address is the proxy's (often
# loopback), so it says nothing about the client.
_PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP", "HTTP_X_FORWARDED_HOST")


def metrics_allowed(request: HttpRequest) -> bool:
    """Whether the request may read the metrics: it carries METRICS_TOKEN as a bearer
    token, or it comes straight (no proxy headers) from METRICS_ALLOWED_ADDRESSES.

    Even global counters tell an outsider too much: on a quiet server the votes accepted
    since the last scrape are one poll's votes, which that poll may hold back.
    """
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and constant_time_compare(given.strip(), token):
            return True
    if any(header in request.META for header in _PROXY_HEADERS):
        return False
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR") or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _networks(tuple(settings.METRICS_ALLOWED_ADDRESSES)))


@functools.lru_cache(maxsize=8)
def _networks(items: tuple[str, ...]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(item, strict=False) for item in items]
