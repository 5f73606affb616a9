"""ASGI entry point: HTTP goes to Django, WebSockets to the realtime app's consumers."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "polling.settings")

# Django must be set up before anything imports models (the consumers do).
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.sessions import SessionMiddlewareStack  # noqa: E402

from realtime.routing import websocket_urlpatterns  # noqa: E402
from realtime.security import allowed_hosts_origin_validator  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Cookies and a lazy session: the voter cookie and the signed-in user decide who
        # may see counts that a poll shows only to those who voted (realtime.voters).
        "websocket": allowed_hosts_origin_validator(SessionMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
