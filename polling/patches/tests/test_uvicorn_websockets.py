"""polling.patches.uvicorn_websockets against a real uvicorn, run as polling.serve runs it."""

from __future__ import annotations

import threading
import time

import uvicorn
import websockets.sync.client

from devservices import free_port
from polling.patches.uvicorn_websockets import socket_writer
from polling.serve import server_options


def _text_frame(text: str) -> bytes:
    """An unmasked text frame, as a server sends it (short texts only)."""
    payload = text.encode()
    assert len(payload) < 126
    return bytes([0x81, len(payload)]) + payload


def test_the_direct_writer_recognises_uvicorns_connections_and_writes_frames_they_deliver():
    """Pins what socket_writer relies on in uvicorn as polling.serve runs
    it: the websockets-sansio protocol behind the ASGI send, its state and its transport."""
    found: dict[str, object] = {}

    async def app(scope, receive, send):
        assert scope["type"] == "websocket"
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        write = socket_writer(send)
        found["writer"] = write is not None
        if write is not None:
            found["written"] = write(_text_frame("straight to the socket"))
            await send({"type": "websocket.send", "text": "and then the ordinary way"})
            await receive()  # the client's close
            found["after_close"] = write(_text_frame("too late"))

    options = {**server_options(), "log_config": None}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        with websockets.sync.client.connect(f"ws://127.0.0.1:{server.config.port}/ws") as client:
            assert client.recv(timeout=5) == "straight to the socket"
            assert client.recv(timeout=5) == "and then the ordinary way"
        deadline = time.monotonic() + 5
        while "after_close" not in found and time.monotonic() < deadline:
            time.sleep(0.02)
        assert found == {"writer": True, "written": True, "after_close": False}
    finally:
        server.should_exit = True
        thread.join(10)
