"""WSGI entry point of the REST process: every HTTP endpoint, no WebSockets.

    python -m gunicorn -c python:polling.gunicorn_conf -b 0.0.0.0:8001

gunicorn's threaded worker serves the REST API with one thread per request and no
event loop between the socket and Django, which takes more votes a second than daphne
for the same CPU (docs/decisions/0003-http-servers.md). WebSockets stay with daphne
(polling.asgi), which serves the REST API too.
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
