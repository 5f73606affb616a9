"""Request bodies refused (413) once they pass their limit, before anything buffers them.

Django's BodySizeLimitMiddleware (polling.middleware) checks the declared length, but
under ASGI it runs only after the server and Django's handler have read the whole body.
Two guards come before that:

- ``BodySizeLimit``, an ASGI middleware for any server that hands the body on in chunks
  as it arrives (uvicorn, a lean ASGI path): a declared Content-Length over the limit
  is answered at once, without reading the body; a body without one (chunked) is
  counted while it is received and answered as soon as it passes the limit.
- ``daphne_refuse_large_bodies()``: daphne (Twisted underneath) receives a request's
  whole body, into memory or a temporary file, before it calls the application at all,
  and then queues all of it for the application at once (in 8 KB messages, without
  waiting for them to be read): a 200 MB body cost the process 200 MB of memory
  whatever the application did. The guard makes daphne count a body instead of keeping
  it once it passes the limit (declared or counted), and answer 413 when the client has
  finished sending, without calling the application.
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
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    return {"type": "http.response.start", "status": 413, "headers": headers}, {"type": "http.response.body", "body": body}


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


class _Counted:
    """Where daphne puts a refused body: its size is counted, nothing is kept."""

    closed = False

    def __init__(self, size: int = 0) -> None:
        self.size = size

    def write(self, data: bytes) -> None:
        self.size += len(data)

    def seek(self, *args) -> None:
        pass

    def read(self, *args) -> bytes:
        return b""

    def tell(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True


def daphne_refuse_large_bodies(limit: Callable[[str], int | None] = body_limit) -> bool:
    """Make daphne's requests count a body past its limit instead of keeping it, and answer 413.

    Hooks Twisted's Request callbacks that daphne's WebRequest inherits: gotLength (the
    declared length, before any of the body), handleContentChunk (each piece received)
    and process (called once the whole body is in). The client may send on; what it
    sends is read and dropped, so it hears the 413 rather than a reset connection.
    Returns whether daphne is installed.
    """
    try:
        from daphne.http_protocol import WebRequest
    except ImportError:
        return False
    if getattr(WebRequest, "refuses_large_bodies", False):
        return True
    got_length, handle_chunk, process = WebRequest.gotLength, WebRequest.handleContentChunk, WebRequest.process

    def refuse(request, size: int) -> None:
        request.content.close()  # the memory or temporary file held so far goes now
        request.content = _Counted(size)

    def gotLength(self, length):
        got_length(self, length)
        path = self.channel._path.split(b"?", 1)[0].decode("latin-1")
        self.body_limit = limit(path)
        self.body_declared = length
        if self.body_limit is not None and length is not None and length > self.body_limit:
            refuse(self, 0)

    def handleContentChunk(self, data):
        if isinstance(self.content, _Counted):
            self.content.write(data)
            return
        handle_chunk(self, data)
        if self.body_limit is not None and self.content.tell() > self.body_limit:
            refuse(self, self.content.tell())

    def process_request(self):
        if not isinstance(self.content, _Counted):
            return process(self)
        for message in _too_large(self.body_limit, self.body_declared):
            self.handle_reply(message)
        return None

    WebRequest.gotLength = gotLength
    WebRequest.handleContentChunk = handleContentChunk
    WebRequest.process = process_request
    WebRequest.refuses_large_bodies = True
    return True
