"""The ASGI handler of HTTP requests: Django's, with a request's sync work in one thread call.

Under an ASGI server, Django's ASGIHandler costs a sync view several thread hops and a new
thread per request, which every endpoint pays (the framework floor too):

- It builds the middleware chain in async mode. Django's own middlewares (security,
  sessions, common, CSRF, auth, messages, clickjacking) are async-capable only through
  MiddlewareMixin, which sends each process_request and process_response to a thread
  with sync_to_async; any sync-only middleware instead makes Django run the chain in a
  thread and come back to the loop (async_to_sync) before the view's own hop.
- Each request gets a thread of its own (asgiref's ThreadSensitiveContext creates an
  executor and a thread for it, and joins it at the end).

SyncChainASGIHandler builds the chain in sync mode, as under WSGI, and runs the whole
request (middleware, view, rendering) in one call on the request's thread; that thread
comes from a set kept between requests (docs/decisions/0004-django-request-path.md).
"""

from __future__ import annotations

import collections
import threading
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.core.handlers.wsgi import WSGIHandler
from django.http import FileResponse


def _nothing() -> None:
    pass


class RequestThreads:
    """Single-thread executors, each the thread of one request at a time, kept between requests.

    A request's thread goes back to the set only once everything the request sent it has
    run: a request cancelled mid-view (its client went away) still has its view running
    there. Up to `keep` idle threads are kept; more are shut down.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._idle: collections.deque[ThreadPoolExecutor] = collections.deque()
        self._lock = threading.Lock()

    def take(self) -> ThreadPoolExecutor:
        try:
            return self._idle.pop()
        except IndexError:
            return ThreadPoolExecutor(max_workers=1, thread_name_prefix="request")

    def give_back(self, executor: ThreadPoolExecutor) -> None:
        def back(_future) -> None:
            with self._lock:
                if len(self._idle) < self.keep:
                    self._idle.append(executor)
                    return
            executor.shutdown(wait=False)

        executor.submit(_nothing).add_done_callback(back)

    def idle(self) -> int:
        return len(self._idle)


class SyncChainASGIHandler(ASGIHandler):
    """Django's ASGIHandler, with the middleware chain and the view in one thread call.

    WebSockets do not come here (polling.asgi routes them to Channels). Async views
    still work: the sync chain calls them through async_to_sync, as under WSGI.
    """

    def __init__(self, threads: RequestThreads) -> None:
        BaseHandler.__init__(self)
        self.load_middleware(is_async=False)
        self.threads = threads

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = self.threads.take()
        try:
            # Every thread-sensitive call of this request (the request_started and
            # request_finished signals, the chain) runs on this executor's one thread.
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            self.threads.give_back(executor)

    async def run_get_response(self, request):
        response = await sync_to_async(self.get_response, thread_sensitive=True)(request)
        release_request_cycles(request, response)
        response._handler_class = self.__class__
        if isinstance(response, FileResponse):
            response.block_size = self.chunk_size
        return response

    async def listen_for_disconnect(self, receive):
        """Return when the client goes away: Django's raises RequestAborted instead.

        Django's handle() only waits for this task and drops that exception. Raised, the
        exception's traceback holds handle()'s frame, which holds the task, which holds
        the exception: a reference cycle every request (the server sends http.disconnect
        once the response is out), left for the garbage collector.
        """
        message = await receive()
        if message["type"] != "http.disconnect":
            raise AssertionError(f"Invalid ASGI message after request body: {message['type']}")


class CycleFreeWSGIHandler(WSGIHandler):
    """Django's WSGIHandler, for any WSGI server (polling.wsgi), without a request's cycles."""

    def get_response(self, request):
        response = super().get_response(request)
        release_request_cycles(request, response)
        return response


def release_request_cycles(request, response) -> None:
    """Undo the reference cycles a request leaves once its response is rendered.

    Reference counting frees an object the moment its last reference goes, unless it is
    part of a cycle: then it waits for a garbage collection, and objects alive across a
    young collection are promoted to older generations whose collections walk everything
    the process keeps (1,000 WebSocket viewers' objects, for one). Besides its
    serializer's (polling.strict.validated_data) and its disconnect's (above), a DRF
    vote left three cycles: the view, its Request and its Response refer to each other
    through `parser_context` and `renderer_context`; the HttpRequest and the messages
    middleware's storage refer to each other, and so do the HttpRequest and the
    authentication middleware's `auser` (a partial of the request). Both contexts are
    read only while parsing and rendering, the storage and `auser` only by the
    middleware chain and the view, all done by now.
    """
    context = response.__dict__.pop("renderer_context", None)
    if context:
        drf_request = context.get("request")
        if drf_request is not None:
            drf_request.__dict__.pop("parser_context", None)
    request.__dict__.pop("_messages", None)
    request.__dict__.pop("auser", None)
