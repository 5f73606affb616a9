"""The benchmark's load generator: a separate process that talks to the server on 127.0.0.1.

Two modes, each bounded in time, each printing one JSON object on stdout:

    python bench/loadgen.py http --port 8000 --path /polls/1/vote --body '{"option": 1}' \
        --connections 64 --start-at T --warmup 2 --duration 10 --latencies /tmp/lat.bin

        A closed loop of N keep-alive HTTP/1.1 connections (asyncio protocols over raw
        sockets, no HTTP library): each sends a request, waits for the whole answer, sends
        the next. Only answers that complete inside [T + warmup, T + warmup + duration]
        are counted, so several generator processes started with the same T measure the
        same window. Latencies (microseconds, float32) go to --latencies for merging.

    python bench/loadgen.py viewers --port 8000 --path /ws/polls/1 --count 1000 --duration 60

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
import json
import os
import resource
import signal
import struct
import sys
import time


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
                lambda: _HttpConnection(requests, offset, stats, stop_at, done), host, port
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
        if bodies:
            body = bodies[index % len(bodies)]
            head = (
                f"{args.method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            requests.append(head + body)
        else:
            requests.append(f"{args.method} {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
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


class _Viewer(asyncio.Protocol):
    """A minimal WebSocket client: handshake, then count text frames and answer pings."""

    def __init__(self, host: str, path: str, totals: dict, ready: asyncio.Future) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.totals = totals
        self.ready = ready
        self.buffer = bytearray()
        self.upgraded = False
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                if not self.ready.done():
                    self.ready.set_result(False)
                self.transport.close()
                return
            del buffer[: end + 4]
            self.upgraded = True
            if not self.ready.done():
                self.ready.set_result(True)
        totals = self.totals
        while len(buffer) >= 2:
            opcode = buffer[0] & 0x0F
            length = buffer[1] & 0x7F
            header = 2
            if length == 126:
                if len(buffer) < 4:
                    return
                length = struct.unpack_from("!H", buffer, 2)[0]
                header = 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                length = struct.unpack_from("!Q", buffer, 2)[0]
                header = 10
            if len(buffer) < header + length:
                return
            if opcode == 0x9:  # ping: answer with a masked pong carrying the same payload
                payload = bytes(buffer[header : header + length])
                mask = os.urandom(4)
                masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + mask + masked)
            elif opcode == 0x8:
                totals["closed_by_server"] += 1
            elif opcode in (0x1, 0x2, 0x0):
                totals["messages"] += 1
                totals["bytes"] += length
            del buffer[: header + length]

    def connection_lost(self, exc) -> None:
        self.totals["lost"] += 1
        if not self.ready.done():
            self.ready.set_result(False)


async def _viewers_main(args) -> dict:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    totals = {"messages": 0, "bytes": 0, "lost": 0, "closed_by_server": 0}
    host = f"127.0.0.1:{args.port[0]}"
    connected = 0
    transports = []
    semaphore = asyncio.Semaphore(args.connect_concurrency)
    began = time.time()

    async def one(index: int) -> None:
        nonlocal connected
        async with semaphore:
            ready = loop.create_future()
            try:
                transport, _ = await loop.create_connection(
                    lambda: _Viewer(host, args.path[index % len(args.path)], totals, ready),
                    "127.0.0.1",
                    args.port[index % len(args.port)],
                )
            except OSError:
                return
            transports.append(transport)
            if await asyncio.wait_for(ready, 30):
                connected += 1

    await asyncio.gather(*(one(index) for index in range(args.count)), return_exceptions=True)
    connect_s = time.time() - began
    # Tell the parent that every viewer is in (it waits for this line on stderr).
    print(json.dumps({"connected": connected, "connect_s": round(connect_s, 3)}), file=sys.stderr, flush=True)
    cpu_before = _cpu_seconds()
    messages_before = totals["messages"]
    watch_began = time.time()
    try:
        await asyncio.wait_for(stop.wait(), timeout=args.duration)
    except asyncio.TimeoutError:
        pass
    watched = time.time() - watch_began
    cpu = _cpu_seconds() - cpu_before
    for transport in transports:
        transport.close()
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    http = sub.add_parser("http")
    http.add_argument("--port", type=int, action="append", required=True, help="repeat to spread connections")
    http.add_argument("--path", action="append", required=True, help="repeat to cycle through paths")
    http.add_argument("--method", default="POST")
    http.add_argument("--body", action="append", help="JSON body; repeat to cycle through bodies")
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
