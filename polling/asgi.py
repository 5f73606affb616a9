"""ASGI entry point: votes go to their lean path, other HTTP to Django, WebSockets to the
realtime app's consumers."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "polling.settings")

# Django must be set up before anything imports models (the consumers do).
django.setup(set_prefix=False)

from polling.asgi_limits import BodySizeLimit  # noqa: E402
from polling.handlers import RequestThreads, SyncChainASGIHandler  # noqa: E402

# HTTP: Django's handler with the chain and the view in one call on a kept thread (see
# polling.handlers). Up to 128 idle request threads are kept: more than the 64 clients
# of the intake benchmark, few enough to cost little memory. BodySizeLimit refuses a
# body past its limit as it arrives, before the handler reads it.
django_asgi_app = BodySizeLimit(SyncChainASGIHandler(RequestThreads(keep=128)))

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.sessions import SessionMiddlewareStack  # noqa: E402

from polls.api.vote_intake import VoteIntake  # noqa: E402
from realtime.routing import websocket_urlpatterns  # noqa: E402
from realtime.security import allowed_hosts_origin_validator  # noqa: E402

application = ProtocolTypeRouter(
    {
        # POST /polls/<id>/vote is answered on the event loop (polls.api.vote_intake).
        "http": VoteIntake(django_asgi_app),
        # Cookies and a lazy session: the voter cookie and the signed-in user decide who
        # may see counts that a poll shows only to those who voted (realtime.voters).
        "websocket": allowed_hosts_origin_validator(SessionMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

from polling.heap import freeze_startup_heap  # noqa: E402

# Full garbage collections skip what the start built (see polling.heap).
freeze_startup_heap(load_urls=True)
