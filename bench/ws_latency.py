"""Vote-to-screen latency: from an accepted vote to the WebSocket message that shows it.

    .venv/bin/python -m bench.ws_latency                      # both sources at 100 and 1,000 votes/s, 20 s each
    .venv/bin/python -m bench.ws_latency --source kafka --rates 1000 --duration 30
    .venv/bin/python -m bench.ws_latency --source http --rates 50 --web-procs 2
    .venv/bin/python -m bench.ws_latency --source http --rates 1000 --audience 0 1000   # alone, then among 1,000

Starts its own PostgreSQL, Redis and Kafka, --web-procs web server processes (default 1) and
one vote worker (as in bench/ws_fanout.py). A viewer connected to ws/polls/<id> records
every poll.updated with its arrival time, while votes arrive at a steady rate (open
loop: vote i is due at start + i / rate) from one of two sources:

- http: POSTed over 64 keep-alive connections; a vote counts from its 204. Covers the
  whole path, but the web intake of this 2-core machine saturates near 100 votes/s, so
  higher rates are asked and not achieved (the achieved rate is printed).
- kafka: published straight to the vote topic by a separate load process, with the
  web's own producer settings (polls.kafka.topics.producer_config: acks=all, idempotent,
  KAFKA_LINGER_MS) and the web's event format (polls.kafka.events.VoteEvent); a vote counts
  from the broker's acknowledgement (the moment the web would answer 204). Covers the
  path after the web: the worker's fetch, the batch transaction, the broadcast
  coalescing, Redis and the web server, at rates the web cannot produce here.

Either way the k-th accepted vote (in time order: one poll is one partition, so the
acknowledgements come in log order) is on screen with the first message whose total
reaches k, and the latency is the time between the two. The coalescing (at most
BROADCAST_MAX_PER_SECOND sends per poll) makes a vote that lands just after a send wait
for the next. Votes of the first --warmup seconds are not measured. Not a test: it
prints figures.

--audience N connects N other viewers of the poll first, from a process of their own
(bench.common.Viewers), so the figure is what one of N + 1 viewers sees while the web
process writes every update to all of them (the measuring viewer's place in the
group's write order is not chosen).
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

from bench.common import add_experiment_args, experiment_env, percentile
from bench.ws_fanout import WsStack, start_ws_stack
from testsupport.processes import REPO


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
            (
                f"POST /polls/{poll_id}/vote HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n{body}"
            ).encode()
            for body in (json.dumps({"option": option}) for option in (1, 2, 3, 4))
        ]
        self.connections = connections
        # (answered at, ms from the request's write to its 204's head), per accepted vote.
        self.answered: list[tuple[float, float]] = []
        self.errors = 0

    @property
    def voted(self) -> list[float]:
        """When each accepted vote was answered."""
        return [at for at, _ in self.answered]

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
            sent = time.time()
            writer.write(self.requests[index % 4])
            head = await reader.readuntil(b"\r\n\r\n")
            at = time.time()
            if head.startswith(b"HTTP/1.1 204"):
                self.answered.append((at, (at - sent) * 1000))
            else:
                self.errors += 1
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                if length:
                    await reader.readexactly(int(length.group(1)))
        except (OSError, asyncio.IncompleteReadError):
            self.errors += 1
            stream = await asyncio.open_connection("127.0.0.1", self.port)
        free.put_nowait(stream)


async def _publish(stack: WsStack, *, rate: float, count: int, seconds: float) -> tuple[list[float], int, float]:
    """Run the kafka source (`_publish`, a separate process); its acknowledgement times, errors, start."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.ws_latency",
        "_publish",
        "--poll-id",
        str(stack.poll_id),
        "--rate",
        str(rate),
        "--count",
        str(count),
        "--seconds",
        str(seconds),
        cwd=REPO,
        env=stack.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the kafka load process failed:\n{err.decode()[-3000:]}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    return result["acked"], result["errors"], result["started"]


async def _measure(
    stack: WsStack,
    *,
    rate: float,
    duration: float,
    warmup: float,
    source: str = "http",
    connections: int = 64,
    audience: int = 0,
) -> dict:
    from bench.common import Viewers

    ws_url = stack.web.url.replace("http://", "ws://") + f"/ws/polls/{stack.poll_id}"
    arrivals: list[tuple[float, int]] = []
    crowd = None
    if audience:
        # The others watching the same poll, from their own process, connected first; the
        # measuring viewer is one more of the poll's group, at no chosen place in it.
        crowd = Viewers(
            port=stack.web.port, path=f"/ws/polls/{stack.poll_id}", count=audience, max_seconds=warmup + duration + 120
        ).start()
        if crowd.connected < audience:
            crowd.stop()
            raise RuntimeError(f"only {crowd.connected} of {audience} viewers connected")
    try:
        result = await _watch(
            stack, ws_url, arrivals, rate=rate, duration=duration, warmup=warmup, source=source, connections=connections
        )
    finally:
        if crowd is not None:
            crowd.stop()
    result["audience"] = audience
    return result


async def _watch(
    stack: WsStack,
    ws_url: str,
    arrivals: list[tuple[float, int]],
    *,
    rate: float,
    duration: float,
    warmup: float,
    source: str,
    connections: int,
) -> dict:
    import websockets

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
        answers: list[float] = []
        if source == "kafka":
            voted, errors, started = await _publish(stack, rate=rate, count=count, seconds=warmup + duration)
        else:
            started = time.time() + 0.5
            sender = _VoteSender(port=stack.vote_port, poll_id=stack.poll_id, connections=connections)
            await sender.run(rate=rate, count=count, started=started, until=started + warmup + duration)
            voted, errors = sender.voted, sender.errors
            answers = sorted(ms for at, ms in sender.answered if at >= started + warmup)
        # Wait until the last vote is on screen (or give up after 30 s).
        deadline = time.time() + 30
        while time.time() < deadline and (not arrivals or arrivals[-1][1] < base_total + len(voted)):
            await asyncio.sleep(0.05)
        listener.cancel()

    voted.sort()
    totals = [total for _, total in arrivals]
    latencies: list[float] = []
    missing = 0
    for k, at in enumerate(voted, start=1):
        if at < started + warmup:
            continue
        index = bisect.bisect_left(totals, base_total + k)
        if index == len(totals):
            missing += 1
            continue
        latencies.append((arrivals[index][0] - at) * 1000)
    latencies.sort()
    span = (voted[-1] - voted[0]) if len(voted) > 1 else 0
    return {
        "source": source,
        "rate": rate,
        "achieved_rate": (len(voted) - 1) / span if span else 0.0,
        "votes": len(voted),
        "errors": errors,
        "messages": len(arrivals),
        "messages_per_s": len(arrivals) / max(0.001, arrivals[-1][0] - arrivals[0][0]) if len(arrivals) > 1 else 0.0,
        "measured": len(latencies),
        "missing": missing,
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies) if latencies else float("nan"),
        # The http source's own answers: what a voting client waits for its 204, at this rate.
        "answer_p50_ms": percentile(answers, 50),
        "answer_p99_ms": percentile(answers, 99),
    }


def latency(
    stack: WsStack, *, rates: list[float], duration: float, warmup: float, source: str = "http", audience: int = 0
) -> list[dict]:
    return [
        asyncio.run(_measure(stack, rate=rate, duration=duration, warmup=warmup, source=source, audience=audience))
        for rate in rates
    ]


SOURCES = {
    "http": "HTTP 204 -> screen (web intake, Kafka, worker, broadcast, Redis, web server)",
    "kafka": "Kafka ack -> screen (worker fetch, batch, broadcast, Redis, web server; offered at the topic)",
}


def print_latency(results: list[dict], web_procs: int = 1) -> None:
    for source, label in SOURCES.items():
        rows = [r for r in results if r["source"] == source]
        if not rows:
            continue
        print(f"\nvote-to-screen latency, {label}, {web_procs} web process(es), one worker:")
        answers = source == "http"
        print(
            f"{'votes/s':>8} {'viewers':>8} {'achieved':>9} {'votes':>6} {'msgs/s':>7} {'p50 (ms)':>9} {'p90 (ms)':>9} "
            f"{'p99 (ms)':>9} {'max (ms)':>9}" + (f" {'204 p50':>8} {'204 p99':>8}" if answers else "")
        )
        for r in rows:
            print(
                f"{r['rate']:>8.0f} {r['audience'] + 1:>8} {r['achieved_rate']:>9.1f} {r['votes']:>6} "
                f"{r['messages_per_s']:>7.1f} "
                f"{r['p50_ms']:>9.0f} {r['p90_ms']:>9.0f} {r['p99_ms']:>9.0f} {r['max_ms']:>9.0f}"
                + (f" {r['answer_p50_ms']:>8.1f} {r['answer_p99_ms']:>8.1f}" if answers else "")
                + (f"   ({r['errors']} errors, {r['missing']} never shown)" if r["errors"] or r["missing"] else "")
            )
        if answers:
            print("(204 p50 / p99: from a vote's request to its answer, what the voting client waits)")


def bench_rows(ctx) -> list:
    """Section 4 of bench/run.py: the HTTP source at 100 and 1,000 votes/s asked (at 1,000 also with
    ctx.viewers others watching), the Kafka source at 1,000."""
    from bench.common import Row

    stack = start_ws_stack(
        name="ws_latency",
        work_dir=ctx.work_dir,
        services=ctx.services,
        web_procs=ctx.web_procs,
        server=ctx.server,
        extra_env=ctx.product_env,
        worker_args=ctx.worker_args,
    )
    try:
        results = latency(stack, rates=[100.0, 1000.0], duration=ctx.duration, warmup=ctx.warmup, source="http")
        # What one viewer among ctx.viewers sees while the intake saturates the process.
        results += latency(
            stack, rates=[1000.0], duration=ctx.duration, warmup=ctx.warmup, source="http", audience=ctx.viewers
        )
        results += latency(stack, rates=[1000.0], duration=ctx.duration, warmup=ctx.warmup, source="kafka")
    finally:
        stack.stop()
    print_latency(results)
    rows = []
    for r in results:
        if r["source"] == "kafka":
            what, short = f"Kafka ack -> screen at {r['rate']:,.0f} votes/s offered at the topic", "kafka"
        else:
            what, short = f"204 -> screen at {r['rate']:,.0f} votes/s asked over HTTP", "http"
            if r["audience"]:
                what += f", {r['audience'] + 1:,} viewers"
        note = f"achieved {r['achieved_rate']:.0f} votes/s; {r['messages_per_s']:.1f} messages/s on the socket"
        if r["errors"] or r["missing"]:
            note += f"; {r['errors']} errors, {r['missing']} never shown"
        rows.append(Row("4 latency", f"vote-to-screen p50, {what}", r["p50_ms"], "ms", note=note))
        kept_up = r["achieved_rate"] >= 0.95 * r["rate"]
        rows.append(
            Row(
                "4 latency",
                f"vote-to-screen p99, {what}",
                r["p99_ms"],
                "ms",
                target="< 250 ms at 1,000/s" if r["rate"] >= 1000 else "< 250 ms",
                ok=r["p99_ms"] < 250 and (kept_up or short == "http" and r["rate"] < 1000),
                note=""
                if kept_up
                else f"the {short} source sustained only {r['achieved_rate']:.0f} votes/s: the figure is at that rate",
            )
        )
        if short == "http" and not r["audience"]:
            # Section 1's 64 clients send as fast as they are answered, so their latency is
            # the queue of a saturated process; this is the answer at a rate asked of it.
            rows.append(
                Row(
                    "4 latency",
                    f"answer (204) p99, {r['rate']:,.0f} votes/s asked over HTTP, 64 connections",
                    r["answer_p99_ms"],
                    "ms",
                    note=f"p50 {r['answer_p50_ms']:.1f} ms; open loop, achieved {r['achieved_rate']:.0f} votes/s",
                )
            )
    return rows


def _cmd_publish(args) -> None:
    """The kafka source: `count` votes at `rate`/s to the vote topic, as the web publishes them."""
    import threading

    import django

    django.setup()
    from django.conf import settings
    from kafka import KafkaProducer

    from bench.apply_rate import make_event
    from polls.kafka.topics import producer_config, vote_topic

    producer = KafkaProducer(**producer_config(timeout=settings.VOTE_PUBLISH_TIMEOUT))
    topic = vote_topic()
    producer.partitions_for(topic)  # metadata now, not on the first vote
    acked: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def on_ack(_metadata) -> None:
        at = time.time()
        with lock:
            acked.append(at)

    def on_error(_exc) -> None:
        with lock:
            errors[0] += 1

    started = time.time() + 0.2
    until = started + args.seconds
    for index in range(args.count):
        due = started + index / args.rate
        now = time.time()
        if due > now:
            time.sleep(due - now)
        elif now > until:
            break
        event = make_event(args.poll_id, index % 4 + 1, index)
        future = producer.send(topic, key=event.key, value=event.to_bytes())
        future.add_callback(on_ack)
        future.add_errback(on_error)
    producer.flush()
    producer.close()
    print(json.dumps({"started": started, "errors": errors[0], "acked": acked}), flush=True)


def main() -> None:
    import tempfile

    if sys.argv[1:2] == ["_publish"]:
        parser = argparse.ArgumentParser(prog="python -m bench.ws_latency _publish")
        for name, kind in (("--poll-id", int), ("--rate", float), ("--count", int), ("--seconds", float)):
            parser.add_argument(name, type=kind, required=True)
        _cmd_publish(parser.parse_args(sys.argv[2:]))
        return
    parser = argparse.ArgumentParser(
        prog="python -m bench.ws_latency", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", type=float, nargs="+", default=[100.0, 1000.0], help="votes per second")
    parser.add_argument(
        "--source",
        choices=list(SOURCES),
        nargs="+",
        default=list(SOURCES),
        help="where the votes come from (default: both, http first)",
    )
    parser.add_argument("--web-procs", type=int, default=1, help="server processes on one socket")
    parser.add_argument(
        "--audience",
        type=int,
        nargs="+",
        default=[0],
        help="other viewers of the poll besides the measuring one, from their own process "
        "(several values: a run for each; default 0)",
    )
    add_experiment_args(parser)
    parser.add_argument("--profile", type=Path, help="py-spy stacks of the servers and the worker, per rate")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per rate")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of votes not measured first")
    args = parser.parse_args()
    work_dir = Path(tempfile.mkdtemp(prefix="polling-bench-ws-"))
    stack = start_ws_stack(
        name="ws_latency",
        work_dir=work_dir,
        web_procs=args.web_procs,
        extra_env=experiment_env(args),
        worker_args=args.worker_arg,
    )
    try:
        if args.profile:
            from bench.common import Profiler

            args.profile.mkdir(parents=True, exist_ok=True)
            Profiler.directory = args.profile.resolve()
        results = []
        for source, rate, audience in ((s, r, a) for s in args.source for r in args.rates for a in args.audience):
            name = f"latency-{source}-{rate:.0f}-{audience}"
            spies = (
                Profiler.attach(f"{name}-web", stack.web.pids(), args.warmup + args.duration)
                + Profiler.attach(f"{name}-worker", [stack.worker.pid], args.warmup + args.duration)
                if args.profile
                else []
            )
            results += latency(
                stack, rates=[rate], duration=args.duration, warmup=args.warmup, source=source, audience=audience
            )
            if spies:
                Profiler.wait(spies)
    finally:
        stack.stop()
    print_latency(results, args.web_procs)
    print(f"(process logs in {work_dir})")


if __name__ == "__main__":
    main()
