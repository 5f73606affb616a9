"""Vote-to-screen latency: from a vote's 204 to the WebSocket message that shows it.

    .venv/bin/python bench/ws_latency.py                      # 20 and 100 votes/s, 20 s each
    .venv/bin/python bench/ws_latency.py --rates 50 --duration 30

Starts its own PostgreSQL, Redis and Kafka, one daphne process and one vote worker (as in
bench/ws_fanout.py). A viewer connected to ws/polls/<id> records every poll.updated with
its arrival time; votes are POSTed at a steady rate from a pool of threads. The k-th 204
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
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.ws_fanout import WsStack, cast_vote, start_ws_stack  # noqa: E402


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def _measure(stack: WsStack, *, rate: float, duration: float, warmup: float) -> dict:
    import websockets

    ws_url = stack.web.url.replace("http://", "ws://") + f"/ws/polls/{stack.poll_id}"
    arrivals: list[tuple[float, int]] = []
    voted: list[float] = []
    lock = threading.Lock()
    errors = 0

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

        def vote(index: int) -> None:
            nonlocal errors
            delay = started + index / rate - time.time()
            if delay > 0:
                time.sleep(delay)
            try:
                at = cast_vote(stack.web.url, stack.poll_id, 1 + index % 4)
            except Exception:  # noqa: BLE001 - counted, and the figures say so
                with lock:
                    errors += 1
                return
            with lock:
                voted.append(at)

        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(max_workers=max(4, int(rate // 5))) as pool:
            await asyncio.gather(*(loop.run_in_executor(pool, vote, i) for i in range(count)))
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
        "errors": errors,
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


def print_latency(results: list[dict]) -> None:
    print("\nvote-to-screen latency (204 -> poll.updated on a WebSocket), one daphne, one worker:")
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
        results = latency(stack, rates=[20.0, 100.0], duration=ctx.duration, warmup=ctx.warmup)
    finally:
        stack.stop()
    print_latency(results)
    rows = []
    for r in results:
        note = f"achieved {r['achieved_rate']:.0f} votes/s; {r['messages_per_s']:.1f} messages/s on the socket"
        rows.append(Row("4 latency", f"vote-to-screen p50 at {r['rate']:.0f} votes/s", r["p50_ms"], "ms", note=note))
        rows.append(Row("4 latency", f"vote-to-screen p99 at {r['rate']:.0f} votes/s", r["p99_ms"], "ms"))
    return rows


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=float, nargs="+", default=[20.0, 100.0], help="votes per second")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per rate")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of votes not measured first")
    args = parser.parse_args()
    work_dir = Path(tempfile.mkdtemp(prefix="polling-bench-ws-"))
    stack = start_ws_stack(name="ws_latency", work_dir=work_dir)
    try:
        results = latency(stack, rates=args.rates, duration=args.duration, warmup=args.warmup)
    finally:
        stack.stop()
    print_latency(results)
    print(f"(process logs in {work_dir})")


if __name__ == "__main__":
    main()
