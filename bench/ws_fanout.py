"""Fan-out: N WebSocket viewers of one poll, one vote, how long until all of them have it.

    .venv/bin/python bench/ws_fanout.py                       # 10,000 viewers, 5 votes
    .venv/bin/python bench/ws_fanout.py --viewers 2000 --rounds 3

Starts its own PostgreSQL, Redis and Kafka (devservices, temporary directory, free ports),
one daphne process and one vote worker, as production runs them. Viewer processes
(--procs, default 2) open the connections to ws/polls/<id> with a minimal asyncio
WebSocket client; then each round casts one vote over HTTP and measures, from its 204:

- first / all received: when the first and the last viewer got the poll.updated that
  carries the vote (found by its version);
- how many viewers got it.

Memory per connection is the daphne process's resident memory with all viewers connected,
less before the first one, divided by the viewers. Client and server share the machine's
two cores. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

VERSION = re.compile(rb'"version": (\d+)')


# --- the stack: services, worker, web ---------------------------------------------------------


@dataclass
class WsStack:
    services: object
    web: object
    worker: object
    poll_id: int
    own_services: bool

    def stop(self) -> None:
        self.web.stop()
        self.worker.stop()
        if self.own_services:
            self.services.stop()


def start_ws_stack(*, name: str, work_dir: Path, services=None, extra_env: dict[str, str] | None = None) -> WsStack:
    """Web + worker on fresh databases and topic; services started here unless given."""
    from bench.common import Services, WebServer, Worker, django_env, log, manage

    own = services is None
    if own:
        services = Services.start(postgres=True, redis=True, kafka=True)
    try:
        topic = f"bench-{name}-{uuid.uuid4().hex[:8]}"
        env = django_env(
            database_url=services.database_url(f"bench_{name}"),
            kafka=services.kafka_bootstrap,
            redis=services.redis_url,
            topic=topic,
            extra={"WS_MAX_CONNECTIONS": "50000", "LOG_LEVEL": "WARNING", **(extra_env or {})},
        )
        manage(env, "migrate", "--no-input")
        worker = Worker(name=f"{name}-worker", env=dict(env, LOG_LEVEL="INFO"), log_dir=work_dir, group=f"bench-{topic}",
                        extra=["--batch-wait-ms", "20"]).start()
        web = WebServer(name=f"{name}-web", env=env, log_dir=work_dir).start()
        poll_id = _create_poll(web.url)
        log(f"{name}: web on {web.url}, poll {poll_id}")
        return WsStack(services=services, web=web, worker=worker, poll_id=poll_id, own_services=own)
    except BaseException:
        if own:
            services.stop()
        raise


def _create_poll(base_url: str) -> int:
    body = {"question": "Which colour wins the fan-out?", "option1": "Red", "option2": "Blue",
            "option3": "Green", "option4": "Yellow"}
    request = urllib.request.Request(f"{base_url}/polls", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)["id"]


def cast_vote(base_url: str, poll_id: int, option: int) -> float:
    """POST one vote; the wall-clock time of its 204."""
    request = urllib.request.Request(f"{base_url}/polls/{poll_id}/vote", data=json.dumps({"option": option}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        if answer.status != 204:
            raise RuntimeError(f"vote answered {answer.status}")
    return time.time()


# --- viewer processes --------------------------------------------------------------------------


class _Viewer(asyncio.Protocol):
    """A minimal WebSocket client recording when each poll version arrives."""

    def __init__(self, host: str, path: str, seen: dict, ready: asyncio.Future) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.seen = seen  # version -> [count, first arrival, last arrival]
        self.ready = ready
        self.buffer = bytearray()
        self.upgraded = False
        self.transport = None

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
                self.transport.close()
                return
            del buffer[: end + 4]
            self.upgraded = True
        while len(buffer) >= 2:
            opcode, length, header = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if length == 126:
                if len(buffer) < 4:
                    return
                length, header = struct.unpack_from("!H", buffer, 2)[0], 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                length, header = struct.unpack_from("!Q", buffer, 2)[0], 10
            if len(buffer) < header + length:
                return
            payload = bytes(buffer[header : header + length])
            del buffer[: header + length]
            if opcode == 0x9:
                # daphne pings every 20 s and drops a client that does not answer.
                mask = os.urandom(4)
                masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + mask + masked)
                continue
            if opcode != 0x1:
                continue
            if payload.startswith(b'{"type": "poll.snapshot"'):
                if not self.ready.done():
                    self.ready.set_result(True)
                continue
            match = VERSION.search(payload)
            if match:
                entry = self.seen.setdefault(int(match.group(1)), [0, now, now])
                entry[0] += 1
                entry[2] = now

    def connection_lost(self, exc) -> None:
        if not self.ready.done():
            self.ready.set_result(False)


async def _viewers_main(args) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    seen: dict[int, list] = {}
    host = f"127.0.0.1:{args.port}"
    semaphore = asyncio.Semaphore(args.connect_concurrency)
    transports = []
    connected = 0

    async def one() -> None:
        nonlocal connected
        async with semaphore:
            ready = loop.create_future()
            try:
                transport, _ = await loop.create_connection(lambda: _Viewer(host, args.path, seen, ready), "127.0.0.1", args.port)
            except OSError:
                return
            transports.append(transport)
            try:
                if await asyncio.wait_for(ready, 60):
                    connected += 1
            except asyncio.TimeoutError:
                pass

    began = time.time()
    await asyncio.gather(*(one() for _ in range(args.count)))
    print(json.dumps({"connected": connected, "connect_s": round(time.time() - began, 2)}), flush=True)
    await stop.wait()
    print(json.dumps({"seen": {str(v): e for v, e in seen.items()}}), flush=True)
    for transport in transports:
        transport.close()


# --- the benchmark -----------------------------------------------------------------------------


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fanout(stack: WsStack, *, viewers: int, procs: int, rounds: int, settle: float) -> dict:
    from bench.common import log

    web_pid = stack.web.pids()[0]
    rss_before = _rss_mb(web_pid)
    per_proc = [viewers // procs + (1 if i < viewers % procs else 0) for i in range(procs)]
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "_viewers", "--port", str(stack.web.port), "--path", f"/ws/polls/{stack.poll_id}",
             "--count", str(count)],
            stdout=subprocess.PIPE, text=True,
        )
        for count in per_proc
    ]
    try:
        ready = [json.loads(child.stdout.readline()) for child in children]
        connected = sum(r["connected"] for r in ready)
        connect_s = max(r["connect_s"] for r in ready)
        log(f"fan-out: {connected} of {viewers} viewers connected in {connect_s:.1f} s")
        time.sleep(2.0)  # let the server settle (and its memory with it)
        rss_after = _rss_mb(web_pid)
        voted_at = {}
        for round_index in range(1, rounds + 1):
            voted_at[round_index] = cast_vote(stack.web.url, stack.poll_id, 1 + round_index % 4)
            time.sleep(settle)
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        reports = [json.loads(child.stdout.readline() or "{}") for child in children]
        for child in children:
            child.wait(60)
    seen: dict[int, list] = {}
    for report in reports:
        for version, (count, first, last) in report.get("seen", {}).items():
            entry = seen.setdefault(int(version), [0, first, last])
            entry[0] += count
            entry[1] = min(entry[1], first)
            entry[2] = max(entry[2], last)
    rows = []
    for round_index, at in voted_at.items():
        # Each vote is applied in its own batch (they are seconds apart): version == round.
        count, first, last = seen.get(round_index, [0, float("nan"), float("nan")])
        rows.append({"round": round_index, "received": count, "first_ms": (first - at) * 1000, "all_ms": (last - at) * 1000})
    return {
        "viewers": viewers,
        "connected": connected,
        "connect_s": connect_s,
        "rss_before_mb": rss_before,
        "rss_after_mb": rss_after,
        "kb_per_connection": (rss_after - rss_before) * 1024 / max(1, connected),
        "rounds": rows,
    }


def print_fanout(result: dict) -> None:
    print(f"\nfan-out to {result['connected']} of {result['viewers']} viewers of one poll "
          f"(connected in {result['connect_s']:.1f} s), one daphne process:")
    print(f"{'vote':>5} {'received':>9} {'first (ms)':>11} {'all (ms)':>9}")
    for row in result["rounds"]:
        print(f"{row['round']:>5} {row['received']:>9} {row['first_ms']:>11.0f} {row['all_ms']:>9.0f}")
    alls = sorted(row["all_ms"] for row in result["rounds"])
    print(f"median time for all viewers to have the update: {alls[len(alls) // 2]:.0f} ms")
    print(f"daphne RSS {result['rss_before_mb']:.0f} MB before, {result['rss_after_mb']:.0f} MB with all viewers: "
          f"{result['kb_per_connection']:.1f} KB per connection")


def bench_rows(ctx) -> list:
    """Section 5 of bench/run.py."""
    from bench.common import Row

    stack = start_ws_stack(name="ws_fanout", work_dir=ctx.work_dir, services=ctx.services)
    try:
        viewers = 2000 if ctx.quick else 10000
        result = fanout(stack, viewers=viewers, procs=2, rounds=3 if ctx.quick else 5, settle=3.0)
    finally:
        stack.stop()
    print_fanout(result)
    alls = sorted(row["all_ms"] for row in result["rounds"])
    return [
        Row("5 fan-out", f"all {result['connected']} viewers have a vote's update", alls[len(alls) // 2], "ms",
            note=f"from the 204; connected in {result['connect_s']:.1f} s"),
        Row("5 fan-out", "memory per WebSocket connection", result["kb_per_connection"], "KB",
            note=f"daphne RSS {result['rss_before_mb']:.0f} -> {result['rss_after_mb']:.0f} MB"),
    ]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_viewers":
        parser = argparse.ArgumentParser()
        parser.add_argument("_viewers")
        parser.add_argument("--port", type=int, required=True)
        parser.add_argument("--path", required=True)
        parser.add_argument("--count", type=int, required=True)
        parser.add_argument("--connect-concurrency", type=int, default=100)
        asyncio.run(_viewers_main(parser.parse_args()))
        return
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", type=int, default=10000)
    parser.add_argument("--procs", type=int, default=2, help="viewer client processes")
    parser.add_argument("--rounds", type=int, default=5, help="votes cast, one every --settle seconds")
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--channel-layer", choices=["pubsub", "core"], default="pubsub", help="REDIS_CHANNEL_LAYER")
    args = parser.parse_args()
    work_dir = Path(tempfile.mkdtemp(prefix="polling-bench-ws-"))
    stack = start_ws_stack(name="ws_fanout", work_dir=work_dir, extra_env={"REDIS_CHANNEL_LAYER": args.channel_layer})
    try:
        result = fanout(stack, viewers=args.viewers, procs=args.procs, rounds=args.rounds, settle=args.settle)
    finally:
        stack.stop()
    print(f"channel layer: {args.channel_layer}")
    print_fanout(result)
    print(f"(process logs in {work_dir})")


if __name__ == "__main__":
    main()
