"""WSGI entry point, for any WSGI server: every HTTP endpoint, no WebSockets, and the
votes through DRF rather than their lean path.

Production serves the ASGI application (polling.asgi) through ``python -m
polling.serve``: HTTP, the votes' lean path and the WebSockets on one port.
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "polling.settings")
django.setup(set_prefix=False)

from polling.handlers import CycleFreeWSGIHandler  # noqa: E402

application = CycleFreeWSGIHandler()

from polling.heap import freeze_startup_heap  # noqa: E402

# Full garbage collections skip what the start built (see polling.heap).
freeze_startup_heap(load_urls=True)
