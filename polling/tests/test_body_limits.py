"""Request bodies past API_MAX_BODY_BYTES: 413, without the server buffering them whole.

Against the production server process (polling.serve: uvicorn, which hands the body on
as it arrives), sending 200 MB with and without a Content-Length, and watching the
server's resident memory (VmRSS) while it does.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest
from django.conf import settings

from polling.asgi import django_asgi_app
from testsupport.processes import WebServer

BODY = 200 * 1024 * 1024
PIECE = b"x" * (1024 * 1024)
# The server may grow by buffers and allocator slack, never by anything near the body.
MAX_GROWTH = 40 * 1024 * 1024


def rss_peak(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM; VmRSS is the current one)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def send_large(port: int, *, chunked: bool) -> tuple[int, dict]:
    """POST 200 MB to the vote endpoint; return the answer's status and JSON body."""
    framing = b"Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {BODY}\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(
            b"POST /polls/1/vote HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" + framing + b"\r\n"
        )
        try:
            for _ in range(0, BODY, len(PIECE)):
                sock.sendall(b"%x\r\n%s\r\n" % (len(PIECE), PIECE) if chunked else PIECE)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the whole body went out
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < _length(answer):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    head, body = answer.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body[: _length(answer)])


def _length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 1 << 30


def expect_refused(status: int, body: dict, *, declared: bool) -> None:
    limit = settings.API_MAX_BODY_BYTES
    size = f"{BODY} bytes" if declared else f"more than {limit} bytes"
    assert (status, body) == (413, {"detail": f"Request body too large: {size}, at most {limit} accepted."})


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_200_mb_get_413_and_the_server_does_not_keep_them(process_env, tmp_path, chunked):
    server = WebServer(env=process_env, log_dir=tmp_path)
    server.start()
    try:
        before = rss_peak(server.process.pid)
        expect_refused(*send_large(server.port, chunked=chunked), declared=not chunked)
        after = rss_peak(server.process.pid)
        assert after - before < MAX_GROWTH, f"peak RSS grew from {before >> 20} to {after >> 20} MB"
        # The server goes on answering.
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        server.kill()


def asgi_call(scope_headers: list, messages):
    """Run django_asgi_app on one request; return (what it sent, how many receives it made)."""
    sent, received = [], 0

    async def receive():
        nonlocal received
        received += 1
        return next(messages)

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/polls/1/vote",
        "raw_path": b"/polls/1/vote",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost"), (b"content-type", b"application/json"), *scope_headers],
        "client": ("127.0.0.1", 50000),
        "server": ("localhost", 80),
    }
    asyncio.run(django_asgi_app(scope, receive, send))
    return sent, received


def endless(piece: bytes):
    while True:
        yield {"type": "http.request", "body": piece, "more_body": True}


def test_the_asgi_middleware_answers_a_declared_length_without_reading_the_body():
    sent, received = asgi_call([(b"content-length", str(BODY).encode())], endless(b"x" * 1024))
    assert received == 0
    assert sent[0]["status"] == 413
    expect_refused(413, json.loads(sent[1]["body"]), declared=True)


def test_the_asgi_middleware_stops_reading_a_chunked_body_once_it_passes_the_limit():
    sent, received = asgi_call([(b"transfer-encoding", b"chunked")], endless(b"x" * 1024))
    assert received == settings.API_MAX_BODY_BYTES // 1024 + 1
    assert sent[0]["status"] == 413
    expect_refused(413, json.loads(sent[1]["body"]), declared=False)
