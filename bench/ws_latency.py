"""Vote-to-screen latency: from a vote's 204 to the WebSocket message that shows it.

    .venv/bin/python bench/ws_latency.py                      # 100 and 1,000 votes/s asked, 20 s each
    .venv/bin/python bench/ws_latency.py --rates 50 --duration 30 --web-procs 2

Starts its own PostgreSQL, Redis and Kafka, --web-procs daphne processes (default 1) and
one vote worker (as in bench/ws_fanout.py). A viewer connected to ws/polls/<id> records every poll.updated with
its arrival time; votes are POSTed at a steady rate over 64 keep-alive connections (for at
most the warm-up and the duration: the achieved rate says when the intake could not keep
up; the latency counts from the 204 either way). The k-th 204
(in time order) is on screen with the first message whose total reaches k: the latency
is the time between the two. It covers the worker's Kafka fetch, the batch transaction,
the broadcast coalescing (at most BROADCAST_MAX_PER_SECOND sends per poll: a vote that
lands just after a send waits for the next), Redis and daphne. Not a test: it prints
figures.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.ws_fanout import WsStack, start_ws_stack  # noqa: E402


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class _VoteSender:
    """Votes at a steady rate over keep-alive HTTP/1.1 connections (raw asyncio streams).

    Open loop: vote i is due at start + i / rate whatever the answers before it, on the
    next free connection; when every connection is busy the vote waits for one, so the
    achieved rate says whether the server kept up. A thread per urllib request could
    not send more than about a hundred votes a second from this 2-core machine.
    """

    def __init__(self, *, port: int, poll_id: int, connections: int) -> None:
        self.port = port
        self.requests = [
            (f"POST /polls/{poll_id}/vote HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
             f"Content-Length: {len(body)}\r\n\r\n{body}").encode()
            for body in (json.dumps({"option": option}) for option in (1, 2, 3, 4))
        ]
        self.connections = connections
        self.voted: list[float] = []
        self.errors = 0

    async def run(self, *, rate: float, count: int, started: float, until: float) -> None:
        """Send `count` votes from `started` on, or as many as are due before `until`."""
        free: asyncio.Queue = asyncio.Queue()
        for _ in range(self.connections):
            free.put_nowait(await asyncio.open_connection("127.0.0.1", self.port))
        tasks = []
        for index in range(count):
            delay = started + index / rate - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            stream = await free.get()
            if time.time() > until:
                free.put_nowait(stream)
                break
            tasks.append(asyncio.create_task(self._vote(stream, index, free)))
        await asyncio.gather(*tasks)
        while not free.empty():
            free.get_nowait()[1].close()

    async def _vote(self, stream, index: int, free: asyncio.Queue) -> None:
        reader, writer = stream
        try:
            writer.write(self.requests[index % 4])
            head = await reader.readuntil(b"\r\n\r\n")
            at = time.time()
            if head.startswith(b"HTTP/1.1 204"):
                self.voted.append(at)
            else:
                self.errors += 1
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                if length:
                    await reader.readexactly(int(length.group(1)))
        except (OSError, asyncio.IncompleteReadError):
            self.errors += 1
            stream = await asyncio.open_connection("127.0.0.1", self.port)
        free.put_nowait(stream)


async def _measure(stack: WsStack, *, rate: float, duration: float, warmup: float, connections: int = 64) -> dict:
    import websockets

    ws_url = stack.web.url.replace("http://", "ws://") + f"/ws/polls/{stack.poll_id}"
    arrivals: list[tuple[float, int]] = []

    async with websockets.connect(ws_url, origin=stack.web.url, max_queue=None) as ws:
        snapshot = json.loads(await ws.recv())
        base_total = snapshot["total"]

        async def listen() -> None:
            async for raw in ws:
                message = json.loads(raw)
                if message.get("type") == "poll.updated":
                    arrivals.append((time.time(), message["total"]))

        listener = asyncio.create_task(listen())
        count = int(rate * (warmup + duration))
        started = time.time() + 0.5
        sender = _VoteSender(port=stack.web.port, poll_id=stack.poll_id, connections=connections)
        await sender.run(rate=rate, count=count, started=started, until=started + warmup + duration)
        voted = sender.voted
        # Wait until the last vote is on screen (or give up after 30 s).
        deadline = time.time() + 30
        while time.time() < deadline and (not arrivals or arrivals[-1][1] < base_total + len(voted)):
            await asyncio.sleep(0.05)
        listener.cancel()

    voted.sort()
    totals = [total for _, total in arrivals]
    latencies = []
    missing = 0
    for k, at in enumerate(voted, start=1):
        if at < started + warmup:
            continue
        index = bisect.bisect_left(totals, base_total + k)
        if index == len(totals):
            missing += 1
            continue
        latencies.append((arrivals[index][0] - at) * 1000)
    span = (voted[-1] - voted[0]) if len(voted) > 1 else 0
    return {
        "rate": rate,
        "achieved_rate": (len(voted) - 1) / span if span else 0.0,
        "votes": len(voted),
        "errors": sender.errors,
        "messages": len(arrivals),
        "messages_per_s": len(arrivals) / max(0.001, arrivals[-1][0] - arrivals[0][0]) if len(arrivals) > 1 else 0.0,
        "measured": len(latencies),
        "missing": missing,
        "p50_ms": _percentile(latencies, 50) if latencies else float("nan"),
        "p90_ms": _percentile(latencies, 90) if latencies else float("nan"),
        "p99_ms": _percentile(latencies, 99) if latencies else float("nan"),
        "max_ms": max(latencies) if latencies else float("nan"),
    }


def latency(stack: WsStack, *, rates: list[float], duration: float, warmup: float) -> list[dict]:
    return [asyncio.run(_measure(stack, rate=rate, duration=duration, warmup=warmup)) for rate in rates]


def print_latency(results: list[dict], web_procs: int = 1) -> None:
    print(f"\nvote-to-screen latency (204 -> poll.updated on a WebSocket), {web_procs} daphne, one worker:")
    print(f"{'votes/s':>8} {'achieved':>9} {'votes':>6} {'msgs/s':>7} {'p50 (ms)':>9} {'p90 (ms)':>9} {'p99 (ms)':>9} {'max (ms)':>9}")
    for r in results:
        print(f"{r['rate']:>8.0f} {r['achieved_rate']:>9.1f} {r['votes']:>6} {r['messages_per_s']:>7.1f} "
              f"{r['p50_ms']:>9.0f} {r['p90_ms']:>9.0f} {r['p99_ms']:>9.0f} {r['max_ms']:>9.0f}"
              + (f"   ({r['errors']} errors, {r['missing']} never shown)" if r["errors"] or r["missing"] else ""))


def bench_rows(ctx) -> list:
    """Section 4 of bench/run.py."""
    from bench.common import Row

    stack = start_ws_stack(name="ws_latency", work_dir=ctx.work_dir, services=ctx.services)
    try:
        results = latency(stack, rates=[100.0, 1000.0], duration=ctx.duration, warmup=ctx.warmup)
    finally:
        stack.stop()
    print_latency(results)
    rows = []
    for r in results:
        note = f"achieved {r['achieved_rate']:.0f} votes/s; {r['messages_per_s']:.1f} messages/s on the socket"
        rows.append(Row("4 latency", f"vote-to-screen p50 at {r['rate']:.0f} votes/s", r["p50_ms"], "ms", note=note))
        rows.append(Row("4 latency", f"vote-to-screen p99 at {r['rate']:.0f} votes/s asked", r["p99_ms"], "ms",
                        target="< 250 ms", ok=r["p99_ms"] < 250,
                        note="" if r["achieved_rate"] >= 0.95 * r["rate"] else
                        f"the intake sustained only {r['achieved_rate']:.0f} votes/s: the figure is at that rate"))
    return rows


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=float, nargs="+", default=[100.0, 1000.0], help="votes per second")
    parser.add_argument("--web-procs", type=int, default=1, help="server processes on one socket")
    parser.add_argument("--profile", type=Path, help="py-spy stacks of the servers and the worker, per rate")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per rate")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of votes not measured first")
    args = parser.parse_args()
    work_dir = Path(tempfile.mkdtemp(prefix="polling-bench-ws-"))
    stack = start_ws_stack(name="ws_latency", work_dir=work_dir, web_procs=args.web_procs)
    try:
        if args.profile:
            from bench.common import Profiler

            args.profile.mkdir(parents=True, exist_ok=True)
            Profiler.directory = args.profile.resolve()
        results = []
        for rate in args.rates:
            spies = Profiler.attach(f"latency-{rate:.0f}-web", stack.web.pids(), args.warmup + args.duration) + \
                Profiler.attach(f"latency-{rate:.0f}-worker", [stack.worker.pid], args.warmup + args.duration) \
                if args.profile else []
            results += latency(stack, rates=[rate], duration=args.duration, warmup=args.warmup)
            if spies:
                Profiler.wait(spies)
    finally:
        stack.stop()
    print_latency(results, args.web_procs)
    print(f"(process logs in {work_dir})")


if __name__ == "__main__":
    main()
