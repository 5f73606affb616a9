"""Which WebSocket handshakes may reach the consumers."""

from __future__ import annotations

from channels.security.websocket import OriginValidator
from django.conf import settings


class BrowserOriginValidator(OriginValidator):
    """Refuses a handshake whose Origin is not one of ALLOWED_HOSTS; allows one with none.

    The check stops cross-site WebSocket hijacking: a page on another site opening a
    socket here from a viewer's browser. Browsers always send Origin on a WebSocket
    handshake, so a handshake without one does not come from a browser, and a
    non-browser client could write any Origin it liked anyway. Refusing those (as
    channels' AllowedHostsOriginValidator does) would protect nothing and would break
    the seed's non-browser clients of ws://host/ws, which send no Origin.
    """

    def valid_origin(self, parsed_origin) -> bool:
        if parsed_origin is None:
            return True
        return self.validate_origin(parsed_origin)


def allowed_hosts_origin_validator(application):
    """Wrap a WebSocket application in the origin check, against settings.ALLOWED_HOSTS."""
    allowed_hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = ["localhost", "127.0.0.1", "[::1]"]
    return BrowserOriginValidator(application, allowed_hosts)
