"""Operations endpoints: liveness, readiness and Prometheus metrics.

ProbeMiddleware answers these paths before the Host header check; the routes here
name them (for reverse() and the docs) and serve them when that middleware is absent.
"""

from django.urls import path

from polling.health import healthz, readyz
from polling.metrics import metrics_view

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
]
