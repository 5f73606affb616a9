"""The HTTP side of polling.asgi: Django's handler with the middleware chain and the view in
one call on a request thread kept between requests (polling.handlers).

What must hold: the chain is sync (no sync/async adapter in it), a request's middleware
and view run in one thread, threads are reused, a database connection goes back to the
pool whatever happens to the request, a cancelled request's thread is not handed to
another request before its view has returned, and a served vote leaves no reference
cycle for the garbage collector.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import logging
import threading
import time

import pytest
from django.conf import settings
from django.core.signals import request_finished
from django.db import close_old_connections

from polling.handlers import RequestThreads, SyncChainASGIHandler
from polling.tests.release_urls import held_view
from polls.domain.services import poll_create


def test_the_chain_is_built_sync_with_no_adapter(caplog):
    """Django logs every sync/async adapter it puts in a chain; there must be none."""
    with caplog.at_level(logging.DEBUG, logger="django.request"):
        handler = SyncChainASGIHandler(RequestThreads(keep=4))
    assert not asyncio.iscoroutinefunction(handler._middleware_chain)
    assert not [r.getMessage() for r in caplog.records if "adapted" in r.getMessage()]


def test_polling_asgi_serves_http_with_it_behind_the_body_limit():
    from polling.asgi import django_asgi_app
    from polling.asgi_limits import BodySizeLimit

    assert isinstance(django_asgi_app, BodySizeLimit)
    assert isinstance(django_asgi_app.app, SyncChainASGIHandler)


def _scope(path: str, method: str = "GET", body: bytes = b"", headers: list | None = None) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-length", str(len(body)).encode()), *(headers or [])],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def _serve(
    app,
    path: str,
    *,
    method: str = "GET",
    body: bytes = b"",
    headers=None,
    cancel: str | None = None,
    held=None,
    hang_up: bool = False,
) -> list[dict]:
    """One request through the handler, as an ASGI server calls it.

    hang_up: the client closes its connection once the response is out (the server then
    sends http.disconnect; otherwise Django cancels its wait for one).

    cancel: None; "client went away": the client disconnects mid-view and Django cancels
    the request; "then the server gave up": besides, the server cancels the whole
    application call while the view still runs (daphne does when the application has not
    finished application_close_timeout seconds after the client went away, uvicorn when a
    request outlasts its graceful shutdown).
    """
    gone = asyncio.Event()
    sent_body = False
    messages: list[dict] = []

    async def receive():
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        messages.append(message)
        if hang_up and message["type"] == "http.response.body" and not message.get("more_body"):
            gone.set()

    call = asyncio.create_task(app(_scope(path, method, body, headers), receive, send))
    if cancel is not None:
        while not held.opened.is_set():
            await asyncio.sleep(0.01)
        gone.set()
        await asyncio.sleep(0.2)
        if cancel == "then the server gave up":
            call.cancel()
            await asyncio.sleep(0.2)
        # Still in the view: its connection is in use and must not be touched.
        assert held.connection.connection is not None
        held.proceed.set()
    try:
        await asyncio.wait_for(call, 15)
    except asyncio.CancelledError:
        assert cancel == "then the server gave up"
    return messages


def _wait(condition, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def held():
    """The held view, with Django's own closing of connections at request end turned off
    (as its test client does), so that only the release middleware gives one back."""
    held_view.reset()
    request_finished.disconnect(close_old_connections)
    try:
        yield held_view
    finally:
        request_finished.connect(close_old_connections)
        held_view.proceed.set()


@pytest.mark.urls("polling.tests.release_urls")
@pytest.mark.django_db(transaction=True)
def test_requests_run_in_one_kept_thread_and_give_the_connection_back(held):
    threads = RequestThreads(keep=4)
    app = SyncChainASGIHandler(threads)
    held.proceed.set()
    seen = []

    async def two_requests():
        for _ in range(2):
            messages = await _serve(app, "/test/held")
            assert messages[0]["status"] == 200
            seen.append((held.thread, held.connection))
            # The thread goes back once the request is done.
            while threads.idle() == 0:
                await asyncio.sleep(0.01)
            assert held.connection.connection is None

    asyncio.run(two_requests())
    (first_thread, first_connection), (second_thread, _) = seen
    assert first_thread != threading.get_ident()
    assert second_thread == first_thread, "the second request should reuse the first one's thread"
    assert first_connection.connection is None


@pytest.mark.urls("polling.tests.release_urls")
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("cancel", ["client went away", "then the server gave up"])
def test_a_cancelled_request_gives_its_connection_and_then_its_thread_back(held, cancel):
    threads = RequestThreads(keep=4)
    app = SyncChainASGIHandler(threads)

    async def scenario():
        await _serve(app, "/test/held", cancel=cancel, held=held)

    asyncio.run(scenario())
    _wait(held.returned.is_set, "the view to return")
    _wait(lambda: held.connection.connection is None, "the view's connection to go back to the pool")
    _wait(lambda: threads.idle() == 1, "the thread to be kept again once its view returned")


def test_a_cancelled_requests_thread_is_not_lent_before_its_view_returns():
    threads = RequestThreads(keep=4)
    busy = threads.take()
    release = threading.Event()
    busy.submit(release.wait, 10)
    threads.give_back(busy)
    time.sleep(0.1)
    assert threads.idle() == 0
    assert threads.take() is not busy
    release.set()
    _wait(lambda: threads.idle() == 1, "the thread to come back")
    assert threads.take() is busy


def test_threads_beyond_the_kept_number_are_shut_down():
    threads = RequestThreads(keep=1)
    first, second = threads.take(), threads.take()
    threads.give_back(first)
    threads.give_back(second)
    _wait(lambda: second._shutdown or first._shutdown, "one thread to be shut down")
    assert threads.idle() == 1


@pytest.mark.django_db
def test_probes_metrics_and_the_body_limit_through_the_handler():
    app = SyncChainASGIHandler(RequestThreads(keep=4))

    def status(path, **kwargs):
        messages = asyncio.run(_serve(app, path, **kwargs))
        return messages[0]["status"], b"".join(m.get("body", b"") for m in messages[1:])

    assert status("/healthz") == (200, b'{"status": "ok"}')
    code, body = status(
        "/polls/1/vote",
        method="POST",
        body=b" " * (settings.API_MAX_BODY_BYTES + 1),
        headers=[(b"content-type", b"application/json")],
    )
    assert code == 413 and json.loads(body)["detail"].startswith("Request body too large")
    code, body = status("/metrics")
    assert code == 200
    assert b'polling_http_requests_total{method="POST",status="413",view="poll-vote"}' in body


@pytest.mark.django_db(transaction=True)
def test_a_vote_leaves_no_reference_cycles_behind(kafka_topic):
    """Everything a vote builds goes with its last reference, none of it waits for a garbage
    collection (polling.handlers.release_request_cycles, polling.strict.validated_data).

    As the server serves it: http.disconnect comes once the response is out."""
    poll = poll_create(question="Cycles?", options=["yes", "no"])
    app = SyncChainASGIHandler(RequestThreads(keep=4))
    body = json.dumps({"option": 1}).encode()

    async def votes(count: int) -> None:
        for _ in range(count):
            messages = await _serve(
                app,
                f"/polls/{poll.pk}/vote",
                method="POST",
                body=body,
                headers=[(b"content-type", b"application/json")],
                hang_up=True,
            )
            assert messages[0]["status"] == 204, messages

    async def window() -> tuple[collections.Counter, set[threading.Thread]]:
        """The cyclic garbage of 5 votes, and the threads that ended meanwhile."""
        threads = set(threading.enumerate())
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            await votes(5)
            gc.collect()
            return collections.Counter(type(o).__qualname__ for o in gc.garbage), threads - set(threading.enumerate())
        finally:
            gc.set_debug(0)
            gc.garbage.clear()

    async def scenario() -> collections.Counter:
        await votes(3)  # the first requests fill caches that live on
        # A thread of an earlier test that ends during the window leaves its own database
        # connection as cyclic garbage (Django's per-thread DatabaseWrapper): none of the
        # votes'. Such a window is measured again.
        for _ in range(5):
            garbage, ended = await window()
            if not ended:
                break
        return garbage

    garbage = asyncio.run(scenario())
    assert not garbage, f"cyclic garbage after 5 votes: {garbage.most_common(15)}"


# --- The WSGI handler (polling.wsgi, for any WSGI server) --------------------------------


def test_polling_wsgi_serves_http_with_the_cycle_free_handler():
    from polling.handlers import CycleFreeWSGIHandler
    from polling.wsgi import application

    assert isinstance(application, CycleFreeWSGIHandler)
    assert not asyncio.iscoroutinefunction(application._middleware_chain)


@pytest.mark.django_db(transaction=True)
def test_a_vote_through_the_wsgi_handler_leaves_no_reference_cycles_behind(kafka_topic):
    """The same as above, as a threaded WSGI server's threads call the WSGI handler."""
    import io

    from polling.handlers import CycleFreeWSGIHandler

    poll = poll_create(question="Cycles?", options=["yes", "no"])
    app = CycleFreeWSGIHandler()
    body = json.dumps({"option": 1}).encode()

    def vote() -> str:
        started: list[str] = []
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": f"/polls/{poll.pk}/vote",
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "testserver",
            "SERVER_PORT": "80",
            "HTTP_HOST": "testserver",
            "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http",
            "wsgi.errors": io.StringIO(),
        }
        response = app(environ, lambda status, headers: started.append(status))
        b"".join(response)
        response.close()
        return started[0]

    for _ in range(3):  # the first requests fill caches that live on
        assert vote().startswith("204")
    garbage: collections.Counter = collections.Counter()
    for _ in range(5):  # a thread of an earlier test ending in the window leaves its own garbage
        threads = set(threading.enumerate())
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            statuses = [vote() for _ in range(5)]
            gc.collect()
            garbage = collections.Counter(type(o).__qualname__ for o in gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        assert all(status.startswith("204") for status in statuses), statuses
        if not threads - set(threading.enumerate()):
            break
    assert not garbage, f"cyclic garbage after 5 votes: {garbage.most_common(15)}"
