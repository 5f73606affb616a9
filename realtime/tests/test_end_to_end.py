"""A vote POSTed to a real server goes through Kafka and the worker to a real WebSocket."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
import time
from datetime import UTC, datetime, timedelta

import pytest
import websockets

from realtime.consumers import CLOSE_BAD_MESSAGES
from tests.http import request
from testsupport.processes import WebServer

pytestmark = pytest.mark.django_db(transaction=True)

POLL = {"question": "Tabs or spaces?", "option1": "Tabs", "option2": "Spaces"}


async def _next(ws, predicate, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic())))
        if predicate(message):
            return message


@pytest.fixture(params=["1", "0"], ids=["frames-to-sockets", "asgi-send"])
def each_write_path_server(request, process_env, tmp_path):
    """A web server for each way it writes broadcasts: straight to uvicorn's transports, and
    through each viewer's ASGI send (WS_DIRECT_WRITE=0, the fallback)."""
    web_server = WebServer(env={**process_env, "WS_DIRECT_WRITE": request.param}, log_dir=tmp_path)
    web_server.start()
    yield web_server
    web_server.kill()


def _no_traceback_in(web_server) -> None:
    log = web_server.log()
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]


def test_a_vote_posted_over_http_reaches_websocket_viewers_through_kafka_and_the_worker(
    vote_worker, each_write_path_server
):
    web_server = each_write_path_server
    poll_id = request("POST", f"{web_server.url}/polls", POLL).json()["id"]
    ws_url = web_server.url.replace("http://", "ws://")

    async def scenario():
        origin = web_server.url
        async with (
            websockets.connect(f"{ws_url}/ws/polls/{poll_id}", origin=origin) as one,
            websockets.connect(f"{ws_url}/ws", origin=origin) as every,
        ):
            snapshot = json.loads(await one.recv())
            every_snapshot = json.loads(await every.recv())
            answer = await asyncio.to_thread(request, "POST", f"{web_server.url}/polls/{poll_id}/vote", {"option": 2})
            voted_at = time.monotonic()
            update = await _next(one, lambda m: m["type"] == "poll.updated")
            latency = time.monotonic() - voted_at
            seen_by_every = await _next(every, lambda m: m["type"] == "poll.updated" and m["id"] == poll_id)
            return snapshot, every_snapshot, answer.status, update, seen_by_every, latency

    snapshot, every_snapshot, status, update, seen_by_every, latency = asyncio.run(scenario())
    assert status == 204
    assert snapshot["type"] == "poll.snapshot" and snapshot["total"] == 0
    assert every_snapshot["type"] == "polls.snapshot" and every_snapshot["polls"][0]["id"] == poll_id
    for message in (update, seen_by_every):
        assert (message["id"], message["option1"], message["option2"], message["total"]) == (poll_id, 0, 1, 1)
        assert message["version"] == 1
    print(f"vote-to-screen through Kafka and the worker: {latency * 1000:.0f} ms")


def test_the_real_server_takes_only_its_own_scheme_host_and_port_or_a_trusted_origin_as_origin(process_env, tmp_path):
    trusted = "https://polls.example.com"
    web_server = WebServer(env={**process_env, "CSRF_TRUSTED_ORIGINS": trusted}, log_dir=tmp_path)
    web_server.start()
    port = web_server.port
    origins = {
        f"http://127.0.0.1:{port}": 101,
        trusted: 101,
        None: 101,  # not a browser
        "http://127.0.0.1:9999": 403,
        "https://127.0.0.1:4443": 403,
        f"https://127.0.0.1:{port}": 403,
        f"http://localhost:{port}": 403,
        "http://127.0.0.1": 403,
        "http://evil.example": 403,
        "http://polls.example.com": 403,
        "null": 403,
    }

    async def handshake(origin):
        try:
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws", origin=origin) as ws:
                await ws.recv()
                return 101
        except websockets.InvalidStatus as refused:
            return refused.response.status_code

    async def scenario():
        return {origin: await handshake(origin) for origin in origins}

    try:
        assert asyncio.run(scenario()) == origins
    finally:
        web_server.kill()


def test_viewers_of_a_restarted_server_reconnect_and_resync_from_the_snapshot(web_server, vote_worker):
    poll_id = request("POST", f"{web_server.url}/polls", POLL).json()["id"]
    ws_url = f"{web_server.url.replace('http://', 'ws://')}/ws/polls/{poll_id}"

    async def scenario():
        async with websockets.connect(ws_url) as ws:
            assert json.loads(await ws.recv())["type"] == "poll.snapshot"
            web_server.kill()
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
        # Votes land while the web server is down: cast through a second server process.
        other = WebServer(env=web_server.env, log_dir=web_server.log_path.parent)
        await asyncio.to_thread(other.start)
        try:
            for _ in range(3):
                answer = await asyncio.to_thread(request, "POST", f"{other.url}/polls/{poll_id}/vote", {"option": 1})
                assert answer.status == 204
            await asyncio.to_thread(web_server.start)
            async with websockets.connect(ws_url) as ws:
                return await _next(ws, lambda m: m["total"] == 3)
        finally:
            other.kill()

    resynced = asyncio.run(scenario())
    assert resynced["option1"] == 3 and resynced["version"] >= 1


def test_the_worker_tells_viewers_when_a_polls_deadline_passes(web_server, vote_worker):
    closes_at = datetime.now(UTC) + timedelta(seconds=4)
    poll_id = request(
        "POST",
        f"{web_server.url}/polls",
        {**POLL, "closes_at": closes_at.isoformat(), "results_visibility": "after_close"},
    ).json()["id"]
    assert request("POST", f"{web_server.url}/polls/{poll_id}/vote", {"option": 2}).status == 204
    ws_url = f"{web_server.url.replace('http://', 'ws://')}/ws/polls/{poll_id}"

    async def scenario():
        async with websockets.connect(ws_url) as ws:
            snapshot = json.loads(await ws.recv())
            update = await _next(ws, lambda m: m["type"] == "poll.updated" and m["status"] == "closed")
            return snapshot, update, datetime.now(UTC)

    snapshot, update, received_at = asyncio.run(scenario())
    assert (snapshot["status"], snapshot["results_hidden"]) == ("open", True)
    assert received_at >= closes_at
    assert (update["results_hidden"], update["option1"], update["option2"], update["total"]) == (False, 0, 1, 1)


def _raw_websocket(url: str, path: str) -> socket.socket:
    """A WebSocket opened on a plain socket, its handshake's answer read: frames are ours to write."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    answer = b""
    while b"\r\n\r\n" not in answer:  # frames sent before the handshake's answer are dropped
        answer += sock.recv(65536) or b"\r\n\r\n"
    assert answer.startswith(b"HTTP/1.1 101"), answer
    return sock


def _websocket_burst(url: str, path: str, frames: list[bytes]) -> bytes:
    """Write the frames on a new WebSocket in one send; return what comes back until it closes.

    One write puts every frame in the server's queue before the consumer answers the
    first: the race a real client library's frame-by-frame sends rarely hits.
    """
    with _raw_websocket(url, path) as sock:
        sock.sendall(b"".join(frames))
        received = b""
        with contextlib.suppress(OSError):  # the server may reset once it closed
            while chunk := sock.recv(65536):
                received += chunk
        return received


def _client_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload)) + mask + masked


def test_a_client_closed_for_bad_messages_leaves_no_traceback_in_the_server_log(each_write_path_server):
    web_server = each_write_path_server
    poll_id = request("POST", f"{web_server.url}/polls", POLL).json()["id"]
    garbage = _client_frame(0x1, b'"x"')
    client_close = _client_frame(0x8, struct.pack("!H", 1000))
    # Eleven bad messages at once: the server closes after the tenth with the
    # eleventh still queued. Then messages followed at once by the client's close.
    eleven = _websocket_burst(web_server.url, f"/ws/polls/{poll_id}", [garbage] * 11)
    for _ in range(3):
        _websocket_burst(
            web_server.url, f"/ws/polls/{poll_id}", [garbage, _client_frame(0x1, b'{"type": "ping"}'), client_close]
        )
    assert struct.pack("!H", CLOSE_BAD_MESSAGES) in eleven
    assert request("GET", f"{web_server.url}/polls/{poll_id}").status == 200
    _no_traceback_in(web_server)


def test_viewers_that_leave_while_updates_are_written_leave_no_traceback_in_the_server_log(
    vote_worker, each_write_path_server
):
    web_server = each_write_path_server
    poll_id = request("POST", f"{web_server.url}/polls", POLL).json()["id"]
    viewers = [_raw_websocket(web_server.url, f"/ws/polls/{poll_id}") for _ in range(20)]
    client_close = _client_frame(0x8, struct.pack("!H", 1000))
    for viewer in viewers:
        assert request("POST", f"{web_server.url}/polls/{poll_id}/vote", {"option": 1}).status == 204
        # A close and at once a reset, while the server may be writing an update to it.
        viewer.sendall(client_close)
        viewer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        viewer.close()

    async def last_viewer():
        async with websockets.connect(f"{web_server.url.replace('http://', 'ws://')}/ws/polls/{poll_id}") as ws:
            return await _next(ws, lambda m: m["total"] == len(viewers))

    assert asyncio.run(last_viewer())["option1"] == len(viewers)
    _no_traceback_in(web_server)
