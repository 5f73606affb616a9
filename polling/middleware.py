import asyncio

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.db import connections
from django.http import JsonResponse


class SyncAndAsyncMiddleware:
    """The base of the project's middlewares: sync under WSGI, async under ASGI.

    Django adapts a middleware to the mode of the chain around it. One sync-only
    middleware under ASGI makes it run the whole chain in a thread and hop back to the
    event loop and into a thread again for the view (sync_to_async, async_to_sync,
    sync_to_async): several thread hops per request, on every endpoint. Subclasses
    define ``call`` (sync) and ``acall`` (async) with the same behaviour.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.async_mode:
            return self.acall(request)
        return self.call(request)

    def call(self, request):
        raise NotImplementedError

    async def acall(self, request):
        raise NotImplementedError


class BodySizeLimitMiddleware(SyncAndAsyncMiddleware):
    """Answer 413 to a request whose declared body exceeds API_MAX_BODY_BYTES.

    DRF's parsers read the body as a stream and so bypass Django's
    DATA_UPLOAD_MAX_MEMORY_SIZE; this check runs before any of it is parsed.
    """

    def call(self, request):
        refusal = self.refusal(request)
        return refusal if refusal is not None else self.get_response(request)

    async def acall(self, request):
        refusal = self.refusal(request)
        return refusal if refusal is not None else await self.get_response(request)

    @staticmethod
    def refusal(request):
        """The 400 or 413 this request gets, or None to let it through."""
        if request.path.startswith("/admin/"):
            # Admin forms and bulk actions are staff-only and legitimately larger.
            return None
        limit = settings.API_MAX_BODY_BYTES
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse({"detail": "Content-Length is not a number."}, status=400)
        if length > limit:
            return JsonResponse(
                {"detail": f"Request body too large: {length} bytes, at most {limit} accepted."},
                status=413,
            )
        return None


def release_connections() -> None:
    """Give this thread's database connections back to the pool (those not in an atomic block)."""
    for connection in connections.all(initialized_only=True):
        # Inside an atomic block (ATOMIC_REQUESTS, a test's transaction) the
        # connection is still in use: leave it to whoever opened the block.
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()


class ReleaseDatabaseConnectionMiddleware(SyncAndAsyncMiddleware):
    """Give the request's database connection back to the pool when its view returns.

    Django returns it on request_finished, which under ASGI never fires for a request
    whose client went away mid-view (Django cancels the request, the sync view's thread
    still finishes). Each such request kept a pooled connection forever: 16 client
    timeouts during a Kafka outage exhausted the pool and every later vote got 503
    (found by tests/faults).

    Django keeps connections per thread. Under WSGI this runs in the view's thread.
    Under ASGI the chain is async and a sync view runs in the request's own thread
    (asgiref's per-request thread-sensitive context); the release is sent to that same
    thread, where it runs after the view, cancelled or not (shielded: a second
    cancellation cannot drop it).
    """

    def call(self, request):
        try:
            return self.get_response(request)
        finally:
            release_connections()

    async def acall(self, request):
        try:
            return await self.get_response(request)
        finally:
            await asyncio.shield(sync_to_async(release_connections, thread_sensitive=True)())
