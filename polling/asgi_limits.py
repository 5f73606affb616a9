"""Request bodies refused (413) once they pass their limit, before anything buffers them.

Django's BodySizeLimitMiddleware (polling.middleware) checks the declared length, but
under ASGI it runs only after Django's handler has read the whole body. ``BodySizeLimit``
comes before that, for a server that hands the body on in chunks as it arrives
(uvicorn, as polling.serve runs it): a declared Content-Length over the limit is
answered at once, without reading the body; a body without one (chunked) is counted
while it is received and answered as soon as it passes the limit.

daphne (``manage.py runserver``) receives a whole body before it calls the application,
so under it the guard saves the handler, not the memory: not a production server here.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from django.conf import settings


class BodyTooLarge(Exception):
    """Raised by the counting `receive` of BodySizeLimit once a body passes its limit."""


def body_limit(path: str) -> int | None:
    """The most bytes a request body to `path` may have; None: no limit.

    The admin's forms (bulk actions) may exceed the API's limit: they get Django's own
    form limit (DATA_UPLOAD_MAX_MEMORY_SIZE), which Django checks again on reading them.
    """
    if path.startswith("/admin/"):
        form_limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return None if form_limit is None else max(form_limit, settings.API_MAX_BODY_BYTES)
    return settings.API_MAX_BODY_BYTES


def too_large_detail(limit: int, length: int | None = None) -> str:
    size = f"{length} bytes" if length is not None else f"more than {limit} bytes"
    return f"Request body too large: {size}, at most {limit} accepted."


def _too_large(limit: int, length: int | None) -> tuple[dict, dict]:
    """The ASGI messages of a 413 answer: its start and its body."""
    body = json.dumps({"detail": too_large_detail(limit, length)}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    return {"type": "http.response.start", "status": 413, "headers": headers}, {
        "type": "http.response.body",
        "body": body,
    }


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length of ASGI headers; None when absent or not a number (the app answers that)."""
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodySizeLimit:
    """ASGI middleware: 413 for an HTTP request body over `limit(path)` bytes, before it is read.

    Wraps any ASGI application; other scopes (WebSocket, lifespan) pass through.
    """

    def __init__(self, app, limit: Callable[[str], int | None] = body_limit) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope["path"])
        if limit is None:
            await self.app(scope, receive, send)
            return
        length = declared_length(scope["headers"])
        if length is not None and length > limit:
            await _send_413(send, limit, length)
            return
        received = 0
        started = False

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(received)
            return message

        async def watching_send(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except BodyTooLarge:
            if not started:
                await _send_413(send, limit, None)


async def _send_413(send, limit: int, length: int | None) -> None:
    for message in _too_large(limit, length):
        await send(message)
