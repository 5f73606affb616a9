"""The benchmark's load generator: a separate process that talks to the server on 127.0.0.1.

Two modes, each bounded in time, each printing one JSON object on stdout:

    python -m bench.loadgen http --port 8000 --path /polls/1/vote --body '{"option": 1}' \
        --connections 64 --start-at T --warmup 2 --duration 10 --latencies /tmp/lat.bin

        A closed loop of N keep-alive HTTP/1.1 connections (asyncio protocols over raw
        sockets, no HTTP library): each sends a request, waits for the whole answer, sends
        the next. Only answers that complete inside [T + warmup, T + warmup + duration]
        are counted, so several generator processes started with the same T measure the
        same window. Latencies (microseconds, float32) go to --latencies for merging.

    python -m bench.loadgen viewers --port 8000 --path /ws/polls/1 --count 1000 --duration 60

        N WebSocket viewers that connect, then only count the frames they receive (and
        answer pings) until the duration is over or SIGTERM/SIGINT arrives. A hand-rolled
        client: a full WebSocket library costs the 2-core machine more CPU per message
        than the server under test spends sending it.

The generator's own CPU time is reported (`cpu_s`), so the caller can tell the requests
per second one generator core could drive at most (its ceiling).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import functools
import json
import os
import resource
import select
import signal
import struct
import sys
import time
from collections.abc import Callable


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- HTTP ------------------------------------------------------------------------------


class _Stats:
    def __init__(self, window_start: float, window_end: float) -> None:
        self.window_start = window_start
        self.window_end = window_end
        self.latencies = array.array("f")
        self.status: dict[int, int] = {}
        self.status_all: dict[int, int] = {}
        self.errors = 0
        self.reconnects = 0
        self.total = 0


class _HttpConnection(asyncio.Protocol):
    """One keep-alive connection in a closed loop: request, whole answer, next request."""

    def __init__(self, requests: list[bytes], offset: int, stats: _Stats, stop_at: float, done: asyncio.Future) -> None:
        self.requests = requests
        self.index = offset
        self.stats = stats
        self.stop_at = stop_at
        self.done = done
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.sent_at = 0.0
        self.clock = time.perf_counter
        self.wall_offset = time.time() - time.perf_counter()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._send()

    def _send(self) -> None:
        request = self.requests[self.index % len(self.requests)]
        self.index += 1
        self.sent_at = self.clock()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).lower()
            status = int(head[9:12])
            body_start = end + 4
            length_at = head.find(b"\r\ncontent-length:")
            if length_at >= 0:
                line_end = head.find(b"\r\n", length_at + 2)
                length = int(head[length_at + 17 : line_end if line_end >= 0 else len(head)])
                if len(buffer) < body_start + length:
                    return
                consumed = body_start + length
            elif b"transfer-encoding: chunked" in head:
                consumed = _chunked_end(buffer, body_start)
                if consumed < 0:
                    return
            else:
                consumed = body_start  # 204/304 or an empty answer
            del buffer[:consumed]
            self._answered(status, b"\r\nconnection: close" in head)
            if self.transport is None or self.transport.is_closing():
                return

    def _answered(self, status: int, closing: bool) -> None:
        now = self.clock()
        wall = now + self.wall_offset
        stats = self.stats
        stats.total += 1
        stats.status_all[status] = stats.status_all.get(status, 0) + 1
        if stats.window_start <= wall <= stats.window_end:
            stats.latencies.append((now - self.sent_at) * 1e6)
            stats.status[status] = stats.status.get(status, 0) + 1
        if wall >= self.stop_at:
            self.transport.close()
            return
        if closing:
            self.transport.close()
            return
        self._send()

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_result(exc)


def _chunked_end(buffer: bytearray, start: int) -> int:
    """Index just past a complete chunked body beginning at start, or -1 if incomplete."""
    position = start
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return -1
        size = int(bytes(buffer[position:line_end]).split(b";")[0], 16)
        position = line_end + 2 + size + 2
        if len(buffer) < position:
            return -1
        if size == 0:
            return position


async def _http_client(host: str, port: int, requests: list[bytes], offset: int, stats: _Stats, stop_at: float) -> None:
    loop = asyncio.get_running_loop()
    while time.time() < stop_at:
        done = loop.create_future()
        try:
            await loop.create_connection(
                lambda offset=offset, done=done: _HttpConnection(requests, offset, stats, stop_at, done), host, port
            )
        except OSError:
            stats.errors += 1
            await asyncio.sleep(0.05)
            continue
        exc = await done
        if exc is not None:
            stats.errors += 1
        if time.time() < stop_at:
            stats.reconnects += 1
        offset += 1


def _build_requests(args) -> list[bytes]:
    ports = args.port
    bodies = [body.encode() for body in (args.body or [])]
    paths = args.path
    requests = []
    count = max(len(bodies), len(paths), 1)
    for index in range(count):
        path = paths[index % len(paths)]
        host = f"127.0.0.1:{ports[0]}"
        extra = "".join(f"{header}\r\n" for header in args.header)
        if bodies:
            body = bodies[index % len(bodies)]
            head = (
                f"{args.method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            requests.append(head + body)
        else:
            requests.append(f"{args.method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())
    return requests


async def _http_main(args) -> dict:
    requests = _build_requests(args)
    start = args.start_at or time.time()
    window_start = start + args.warmup
    window_end = window_start + args.duration
    stats = _Stats(window_start, window_end)
    delay = start - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    cpu_before = _cpu_seconds()
    clients = [
        _http_client("127.0.0.1", args.port[index % len(args.port)], requests, index, stats, window_end)
        for index in range(args.connections)
    ]
    await asyncio.gather(*clients)
    cpu = _cpu_seconds() - cpu_before
    if args.latencies:
        with open(args.latencies, "wb") as out:
            stats.latencies.tofile(out)
    return {
        "mode": "http",
        "connections": args.connections,
        "window_s": args.duration,
        "answers": len(stats.latencies),
        "answers_all": stats.total,
        "status": {str(k): v for k, v in sorted(stats.status.items())},
        "status_all": {str(k): v for k, v in sorted(stats.status_all.items())},
        "errors": stats.errors,
        "reconnects": stats.reconnects,
        "cpu_s": round(cpu, 3),
        "elapsed_s": round(time.time() - start, 3),
    }


# --- WebSocket viewers -------------------------------------------------------------------


class WsViewer(asyncio.Protocol):
    """A minimal WebSocket client: the handshake, then each text frame to on_text.

    Hand-rolled, and shared by every benchmark that holds viewers (bench/ws_fanout.py
    too): a full WebSocket library costs the 2-core machine more CPU per message than
    the server under test spends sending it, and the generator must not be what is
    measured. Server frames are never masked, so reading one is a header and a slice.
    `ready` is set to True once the viewer is in (on the 101 answer, or for a subclass
    that says so, on its first text frame), to False if it never gets there.
    """

    ready_on_first_text = False

    def __init__(self, *, host: str, path: str, ready: asyncio.Future, origin: bool = False) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\n"
            + (f"Origin: http://{host}\r\n" if origin else "")
            + "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.ready = ready
        self.buffer = bytearray()
        self.upgraded = False
        self.transport: asyncio.Transport | None = None

    # -- what subclasses see ---------------------------------------------------------

    def on_text(self, payload: bytes, now: float) -> None:
        """A text (or binary) frame arrived at wall-clock time `now`."""

    def on_close_frame(self) -> None:
        """The server sent a close frame."""

    def on_lost(self) -> None:
        """The connection is gone."""

    # -- the protocol ----------------------------------------------------------------

    def _set_ready(self, value: bool) -> None:
        if not self.ready.done():
            self.ready.set_result(value)

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self._set_ready(False)
                self.transport.close()
                return
            del buffer[: end + 4]
            self.upgraded = True
            if not self.ready_on_first_text:
                self._set_ready(True)
        start = 0
        size = len(buffer)
        while size - start >= 2:
            opcode, length, header = buffer[start] & 0x0F, buffer[start + 1] & 0x7F, 2
            if length == 126:
                if size - start < 4:
                    break
                length, header = struct.unpack_from("!H", buffer, start + 2)[0], 4
            elif length == 127:
                if size - start < 10:
                    break
                length, header = struct.unpack_from("!Q", buffer, start + 2)[0], 10
            end = start + header + length
            if end > size:
                break
            if opcode == 0x1 or opcode == 0x2:
                self.on_text(bytes(buffer[start + header : end]), now)
                if self.ready_on_first_text:
                    self._set_ready(True)
            elif opcode == 0x9:  # the server pings every 20 s and drops a client that does not answer
                self._pong(bytes(buffer[start + header : end]))
            elif opcode == 0x8:
                self.on_close_frame()
            start = end
        if start:
            del buffer[:start]

    def _pong(self, payload: bytes) -> None:
        # A client frame must be masked; an all-zero key is a valid one and leaves the
        # payload as it is, which spares 10,000 viewers a byte-by-byte XOR in Python.
        self.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def connection_lost(self, exc) -> None:
        self._set_ready(False)
        self.on_lost()


def read_raw(viewers: list[WsViewer], *, until: Callable[[], bool]) -> None:
    """Read every connected viewer's socket with one epoll loop until until() is true.

    Once the handshakes are done the viewers only read; asyncio's machinery per
    readable socket (a handle, the transport's callbacks) was a third of a 10,000-viewer
    client's time, as much as the recv() itself. Blocks the event loop: call it last.
    """
    poller = select.epoll()
    by_fd: dict[int, WsViewer] = {}
    for viewer in viewers:
        transport = viewer.transport
        if transport is None or transport.is_closing():
            continue
        fd = transport.get_extra_info("socket").fileno()
        transport.pause_reading()
        viewer.write = functools.partial(_write_all, fd)
        by_fd[fd] = viewer
        poller.register(fd, select.EPOLLIN)
    try:
        while not until():
            for fd, _ in poller.poll(0.2):
                viewer = by_fd[fd]
                try:
                    data = os.read(fd, 262144)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    viewer.data_received(data)
                else:
                    poller.unregister(fd)
                    del by_fd[fd]
                    viewer.on_lost()
    finally:
        poller.close()


class _Stopping:
    """True once SIGTERM or SIGINT arrived (read_raw blocks the loop's own handlers)."""

    def __init__(self) -> None:
        self.signalled = False

    def __bool__(self) -> bool:
        return self.signalled


def stop_on_signals() -> _Stopping:
    stopping = _Stopping()

    def handler(signum, frame) -> None:
        stopping.signalled = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
    return stopping


def _write_all(fd: int, data: bytes) -> None:
    try:
        os.write(fd, data)  # a pong: a few bytes into an empty socket buffer
    except OSError:
        pass


async def connect_viewers(
    factory, *, ports: list[int], count: int, concurrency: int, timeout: float = 60
) -> tuple[list, int]:
    """Open `count` viewers (factory(index, ready) builds each), `concurrency` handshakes at a
    time, spread over `ports`; the viewers and how many of them got in."""
    loop = asyncio.get_running_loop()
    semaphore = asyncio.Semaphore(concurrency)
    viewers = []
    connected = 0

    async def one(index: int) -> None:
        nonlocal connected
        async with semaphore:
            ready = loop.create_future()
            try:
                _, viewer = await loop.create_connection(
                    lambda: factory(index, ready), "127.0.0.1", ports[index % len(ports)]
                )
            except OSError:
                return
            viewers.append(viewer)
            try:
                if await asyncio.wait_for(ready, timeout):
                    connected += 1
            except TimeoutError:
                pass

    await asyncio.gather(*(one(index) for index in range(count)))
    return viewers, connected


class _CountingViewer(WsViewer):
    """A viewer of `loadgen.py viewers`: counts what it receives."""

    def __init__(self, *, totals: dict, **kwargs) -> None:
        super().__init__(**kwargs)
        self.totals = totals

    def on_text(self, payload: bytes, now: float) -> None:
        self.totals["messages"] += 1
        self.totals["bytes"] += len(payload)

    def on_close_frame(self) -> None:
        self.totals["closed_by_server"] += 1

    def on_lost(self) -> None:
        self.totals["lost"] += 1


async def _viewers_main(args) -> dict:
    stopping = stop_on_signals()
    totals = {"messages": 0, "bytes": 0, "lost": 0, "closed_by_server": 0}
    host = f"127.0.0.1:{args.port[0]}"
    began = time.time()
    viewers, connected = await connect_viewers(
        lambda index, ready: _CountingViewer(
            totals=totals, host=host, path=args.path[index % len(args.path)], ready=ready
        ),
        ports=args.port,
        count=args.count,
        concurrency=args.connect_concurrency,
        timeout=30,
    )
    connect_s = time.time() - began
    # Tell the parent that every viewer is in (it waits for this line on stderr).
    print(json.dumps({"connected": connected, "connect_s": round(connect_s, 3)}), file=sys.stderr, flush=True)
    cpu_before = _cpu_seconds()
    messages_before = totals["messages"]
    watch_began = time.time()
    read_raw(viewers, until=lambda: stopping or time.time() - watch_began >= args.duration)
    watched = time.time() - watch_began
    cpu = _cpu_seconds() - cpu_before
    for viewer in viewers:
        viewer.transport.close()
    await asyncio.sleep(0.1)
    return {
        "mode": "viewers",
        "requested": args.count,
        "connected": connected,
        "connect_s": round(connect_s, 3),
        "watched_s": round(watched, 3),
        "messages": totals["messages"] - messages_before,
        "bytes": totals["bytes"],
        "lost_before_end": totals["lost"],
        "closed_by_server": totals["closed_by_server"],
        "cpu_s": round(cpu, 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loadgen", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    http = sub.add_parser("http")
    http.add_argument("--port", type=int, action="append", required=True, help="repeat to spread connections")
    http.add_argument("--path", action="append", required=True, help="repeat to cycle through paths")
    http.add_argument("--method", default="POST")
    http.add_argument("--body", action="append", help="JSON body; repeat to cycle through bodies")
    http.add_argument("--header", action="append", default=[], help='"Name: value" sent with every request; repeatable')
    http.add_argument("--connections", type=int, default=64)
    http.add_argument("--start-at", type=float, default=0.0, help="wall-clock time (time.time()) to begin")
    http.add_argument("--warmup", type=float, default=2.0)
    http.add_argument("--duration", type=float, default=10.0)
    http.add_argument("--latencies", help="file for the latencies (float32 microseconds)")
    viewers = sub.add_parser("viewers")
    viewers.add_argument("--port", type=int, action="append", required=True)
    viewers.add_argument("--path", action="append", required=True)
    viewers.add_argument("--count", type=int, default=1000)
    viewers.add_argument("--duration", type=float, default=120.0, help="upper bound; SIGTERM ends it sooner")
    viewers.add_argument("--connect-concurrency", type=int, default=100)
    args = parser.parse_args(argv)
    if args.duration > 900:
        parser.error("--duration is bounded at 900 s")
    result = asyncio.run(_http_main(args) if args.mode == "http" else _viewers_main(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
