"""Benchmark-only settings: the product's settings, plus the floor endpoints in the urlconf.

    DJANGO_SETTINGS_MODULE=bench.floor.settings python -m polling.serve ...

Everything else (middleware, DRF settings, database, Kafka) is the product's own, so the
floor pays exactly the server, middleware and DRF costs the vote endpoint pays.
"""

from polling.settings import *  # noqa: F403

ROOT_URLCONF = "bench.floor.urls"
