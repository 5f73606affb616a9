"""Which WebSocket handshakes may reach the consumers."""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin1")
    return None


def _served_scheme(scope) -> str:
    """The scheme of the page that may open this socket: https for wss, as Django's is_secure().

    Behind a proxy that ends TLS, SECURE_PROXY_SSL_HEADER says so, as it does for CSRF.
    """
    if settings.SECURE_PROXY_SSL_HEADER:
        meta_name, secure_value = settings.SECURE_PROXY_SSL_HEADER
        forwarded = _header(scope, meta_name.removeprefix("HTTP_").lower().replace("_", "-").encode("latin1"))
        if forwarded is not None:
            return "https" if forwarded.split(",", 1)[0].strip() == secure_value else "http"
    return "https" if scope.get("scheme", "ws") == "wss" else "http"


def _served_host(scope) -> str | None:
    """The Host header when it names one of ALLOWED_HOSTS (as Django's get_host()), else None."""
    host = _header(scope, b"host")
    if not host:
        return None
    allowed_hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]
    domain, _port = split_domain_port(host)
    return host.lower() if domain and validate_host(domain, allowed_hosts) else None


def origin_allowed(scope, origin: str) -> bool:
    """Django's CSRF origin rule: the site's own scheme://host[:port], or CSRF_TRUSTED_ORIGINS."""
    host = _served_host(scope)
    if host is not None and origin == f"{_served_scheme(scope)}://{host}":
        return True
    trusted = settings.CSRF_TRUSTED_ORIGINS
    if origin in trusted:
        return True
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    wildcards = [urlsplit(entry) for entry in trusted if "*" in entry]
    return any(
        parsed.scheme == pattern.scheme and is_same_domain(parsed.netloc, pattern.netloc.lstrip("*"))
        for pattern in wildcards
    )


class BrowserOriginValidator:
    """Refuses a handshake whose Origin is not this site's (see origin_allowed); allows one with none.

    The check stops cross-site WebSocket hijacking: a page on another site opening a
    socket here from a viewer's browser. The port and scheme count, since a page on
    another port or over plain http of the same host is another site to the browser.
    Browsers always send Origin on a WebSocket handshake, so a handshake without one
    does not come from a browser, and a non-browser client could write any Origin it
    liked anyway. Refusing those (as channels' AllowedHostsOriginValidator does) would
    protect nothing and would break the seed's non-browser clients of ws://host/ws,
    which send no Origin.
    """

    def __init__(self, application) -> None:
        self.application = application

    async def __call__(self, scope, receive, send):
        origin = _header(scope, b"origin")
        if origin is None or origin_allowed(scope, origin):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)


def allowed_hosts_origin_validator(application):
    """Wrap a WebSocket application in the origin check (settings read at each handshake)."""
    return BrowserOriginValidator(application)
