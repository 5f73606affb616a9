"""Fan-out: N WebSocket viewers of one poll, one vote, how long until all of them have it.

    .venv/bin/python -m bench.ws_fanout                       # 10,000 viewers, 5 votes
    .venv/bin/python -m bench.ws_fanout --viewers 2000 --rounds 3

Starts its own PostgreSQL, Redis and Kafka (devservices, temporary directory, free ports),
the web server processes and one vote worker, as production runs them. Viewer processes
(--procs, default 2) open the connections to ws/polls/<id> with a minimal asyncio
WebSocket client; then each round casts one vote over HTTP and measures, from its 204:

- first / all received: when the first and the last viewer got the poll.updated that
  carries the vote (found by its version);
- how many viewers got it.

Memory per connection is the web processes' resident memory with all viewers connected,
less before the first one, divided by the viewers. Client and server share the machine's
two cores. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.loadgen import WsViewer, connect_viewers, read_raw, stop_on_signals
from testsupport.processes import REPO

VERSION = re.compile(rb'"version": (\d+)')


# --- the stack: services, worker, web ---------------------------------------------------------


@dataclass
class WsStack:
    services: object
    web: object
    worker: object
    poll_id: int
    own_services: bool
    env: dict | None = None  # the product processes' environment (for load processes that publish)

    @property
    def vote_port(self) -> int:
        """Where HTTP votes go: the web server, which serves the WebSockets too."""
        return self.web.port

    def stop(self) -> None:
        self.web.stop()
        self.worker.stop()
        if self.own_services:
            self.services.stop()


def start_ws_stack(
    *,
    name: str,
    work_dir: Path,
    services=None,
    extra_env: dict[str, str] | None = None,
    web_procs: int = 1,
    server: str = "uvicorn",
    worker_args: list[str] | None = None,
) -> WsStack:
    """Web (`web_procs` processes on one socket) + worker on a fresh database and topic;
    services started here unless given."""
    from bench.common import Worker, log, manage, section_env
    from testsupport.processes import SocketWebServer
    from testsupport.services import Services

    own = services is None
    if own:
        services = Services.start(postgres=True, redis=True, kafka=True)
    try:
        _, topic, env = section_env(
            services, name, extra={"WS_MAX_CONNECTIONS": "50000", "LOG_LEVEL": "WARNING", **(extra_env or {})}
        )
        manage(env, "migrate", "--no-input")
        worker = Worker(
            name=f"{name}-worker",
            env=dict(env, LOG_LEVEL="INFO"),
            log_dir=work_dir,
            group=f"bench-{topic}",
            extra=worker_args or [],
        ).start()
        web = SocketWebServer(name=f"{name}-web", env=env, log_dir=work_dir, procs=web_procs, server=server).start()
        poll_id = _create_poll(web.url)
        log(f"{name}: web on {web.url}, poll {poll_id}")
        return WsStack(services=services, web=web, worker=worker, poll_id=poll_id, own_services=own, env=env)
    except BaseException:
        if own:
            services.stop()
        raise


def _create_poll(base_url: str) -> int:
    body = {
        "question": "Which colour wins the fan-out?",
        "option1": "Red",
        "option2": "Blue",
        "option3": "Green",
        "option4": "Yellow",
    }
    request = urllib.request.Request(
        f"{base_url}/polls", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)["id"]


def cast_vote(base_url: str, poll_id: int, option: int) -> float:
    """POST one vote; the wall-clock time of its 204."""
    request = urllib.request.Request(
        f"{base_url}/polls/{poll_id}/vote",
        data=json.dumps({"option": option}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        if answer.status != 204:
            raise RuntimeError(f"vote answered {answer.status}")
    return time.time()


# --- viewer processes --------------------------------------------------------------------------


class _VersionViewer(WsViewer):
    """Records when each poll version arrives: version -> [viewers, first, last arrival]."""

    ready_on_first_text = True  # in once the snapshot is there: the viewer has joined the group

    def __init__(self, *, seen: dict, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seen = seen

    def on_text(self, payload: bytes, now: float) -> None:
        if payload.startswith(b'{"type": "poll.updated"'):
            match = VERSION.search(payload)
            if match:
                entry = self.seen.setdefault(int(match.group(1)), [0, now, now])
                entry[0] += 1
                entry[2] = now


async def _viewers_main(args) -> None:
    stopping = stop_on_signals()
    seen: dict[int, list] = {}
    host = f"127.0.0.1:{args.port}"
    began = time.time()
    viewers, connected = await connect_viewers(
        lambda index, ready: _VersionViewer(seen=seen, host=host, path=args.path, ready=ready, origin=True),
        ports=[args.port],
        count=args.count,
        concurrency=args.connect_concurrency,
    )
    print(json.dumps({"connected": connected, "connect_s": round(time.time() - began, 2)}), flush=True)
    read_raw(viewers, until=lambda: stopping)
    print(json.dumps({"seen": {str(v): e for v, e in seen.items()}}), flush=True)
    for viewer in viewers:
        viewer.transport.close()


# --- the benchmark -----------------------------------------------------------------------------


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _connections_per_process(pids: list[int], port: int) -> list[int]:
    """Established connections each server process holds on the port (from /proc/<pid>/fd
    and /proc/net/tcp), to show how the kernel spread the viewers."""
    inodes = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":  # local port, ESTABLISHED
            inodes[fields[9]] = True
    counts = []
    for pid in pids:
        count = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                count += 1
        counts.append(count)
    return counts


def fanout(
    stack: WsStack,
    *,
    viewers: int,
    procs: int,
    rounds: int,
    settle: float,
    connect_concurrency: int = 100,
    profile: Path | None = None,
) -> dict:
    from bench.common import Profiler, log
    from testsupport.processes import proc_cpu_seconds

    web_pids = stack.web.pids()
    rss_before = [_rss_mb(pid) for pid in web_pids]
    per_proc = [viewers // procs + (1 if i < viewers % procs else 0) for i in range(procs)]
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.ws_fanout",
                "_viewers",
                "--port",
                str(stack.web.port),
                "--path",
                f"/ws/polls/{stack.poll_id}",
                "--count",
                str(count),
                "--connect-concurrency",
                str(max(1, connect_concurrency // procs)),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for count in per_proc
    ]
    spies = []
    try:
        ready = [json.loads(child.stdout.readline()) for child in children]
        connected = sum(r["connected"] for r in ready)
        connect_s = max(r["connect_s"] for r in ready)
        log(f"fan-out: {connected} of {viewers} viewers connected in {connect_s:.1f} s")
        time.sleep(2.0)  # let the server settle (and its memory with it)
        rss_after = [_rss_mb(pid) for pid in web_pids]
        spread = _connections_per_process(web_pids, stack.web.port)
        if profile is not None:
            profile.mkdir(parents=True, exist_ok=True)
            Profiler.directory = profile
            seconds = rounds * settle
            spies = (
                Profiler.attach("fanout-web", web_pids, seconds)
                + Profiler.attach("fanout-worker", [stack.worker.pid], seconds)
                + Profiler.attach("fanout-viewers", [child.pid for child in children], seconds)
            )
        voted_at = {}
        client_pids = [child.pid for child in children]
        cpu_before = ([proc_cpu_seconds(pid) for pid in web_pids], [proc_cpu_seconds(pid) for pid in client_pids])
        for round_index in range(1, rounds + 1):
            voted_at[round_index] = cast_vote(stack.web.url, stack.poll_id, 1 + round_index % 4)
            time.sleep(settle)
        # CPU seconds spent during the rounds (the broadcasts, the server's pings and timers):
        # unlike the times above, they do not depend on what else the machine runs.
        web_cpu = sum(proc_cpu_seconds(pid) for pid in web_pids) - sum(cpu_before[0])
        client_cpu = sum(proc_cpu_seconds(pid) for pid in client_pids) - sum(cpu_before[1])
    finally:
        Profiler.wait(spies)
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
        rows.append(
            {"round": round_index, "received": count, "first_ms": (first - at) * 1000, "all_ms": (last - at) * 1000}
        )
    return {
        "viewers": viewers,
        "connected": connected,
        "connect_s": connect_s,
        "web_procs": len(web_pids),
        "server": stack.web.server,
        "spread": spread,
        "rss_before_mb": sum(rss_before),
        "rss_after_mb": sum(rss_after),
        "kb_per_connection": (sum(rss_after) - sum(rss_before)) * 1024 / max(1, connected),
        "web_cpu_s": web_cpu,
        "client_cpu_s": client_cpu,
        "rounds_s": rounds * settle,
        "rounds": rows,
    }


def print_fanout(result: dict) -> None:
    print(
        f"\nfan-out to {result['connected']} of {result['viewers']} viewers of one poll "
        f"(connected in {result['connect_s']:.1f} s), {result['web_procs']} {result['server']} process(es) "
        f"holding {' + '.join(str(n) for n in result['spread'])} viewers:"
    )
    print(f"{'vote':>5} {'received':>9} {'first (ms)':>11} {'all (ms)':>9}")
    for row in result["rounds"]:
        print(f"{row['round']:>5} {row['received']:>9} {row['first_ms']:>11.0f} {row['all_ms']:>9.0f}")
    alls = sorted(row["all_ms"] for row in result["rounds"])
    print(f"median time for all viewers to have the update: {alls[len(alls) // 2]:.0f} ms")
    print(
        f"CPU during the {len(result['rounds'])} rounds ({result['rounds_s']:.0f} s): "
        f"servers {result['web_cpu_s']:.2f} s, "
        f"viewer clients {result['client_cpu_s']:.2f} s; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"server RSS {result['rss_before_mb']:.0f} MB before, {result['rss_after_mb']:.0f} MB with all viewers "
        f"(all processes): {result['kb_per_connection']:.1f} KB per connection"
    )


def bench_rows(ctx) -> list:
    """Section 5 of `python -m bench` (bench/run.py)."""
    from bench.common import Row

    web_procs = max(2, ctx.web_procs)
    stack = start_ws_stack(
        name="ws_fanout",
        work_dir=ctx.work_dir,
        services=ctx.services,
        web_procs=web_procs,
        server=ctx.ws_server,
        extra_env=ctx.product_env,
        worker_args=ctx.worker_args,
    )
    try:
        viewers = 2000 if ctx.quick else 10000
        result = fanout(stack, viewers=viewers, procs=2, rounds=3 if ctx.quick else 5, settle=3.0)
    finally:
        stack.stop()
    print_fanout(result)
    alls = sorted(row["all_ms"] for row in result["rounds"])
    worst = max(alls)
    return [
        Row(
            "5 fan-out",
            f"all {result['connected']} viewers have a vote's update",
            alls[len(alls) // 2],
            "ms",
            target="< 800 ms",
            ok=worst < 800,
            note=f"from the 204, worst round {worst:.0f} ms; {web_procs} server processes holding "
            f"{' + '.join(str(n) for n in result['spread'])}; connected in {result['connect_s']:.1f} s",
        ),
        Row(
            "5 fan-out",
            "memory per WebSocket connection",
            result["kb_per_connection"],
            "KB",
            target="< 40 KB",
            ok=result["kb_per_connection"] < 40,
            note=f"server RSS {result['rss_before_mb']:.0f} -> {result['rss_after_mb']:.0f} MB, all processes",
        ),
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

    parser = argparse.ArgumentParser(
        prog="python -m bench.ws_fanout", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--viewers", type=int, default=10000)
    parser.add_argument("--procs", type=int, default=2, help="viewer client processes")
    parser.add_argument("--web-procs", type=int, default=2, help="server processes on one socket")
    parser.add_argument("--server", choices=["uvicorn", "daphne"], default="uvicorn")
    parser.add_argument(
        "--connect-concurrency", type=int, default=100, help="handshakes in flight, all viewer processes"
    )
    parser.add_argument(
        "--profile", type=Path, help="py-spy stacks of the servers and viewer processes during the rounds"
    )
    parser.add_argument("--rounds", type=int, default=5, help="votes cast, one every --settle seconds")
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--channel-layer", choices=["pubsub", "core"], default="pubsub", help="REDIS_CHANNEL_LAYER")
    args = parser.parse_args()
    work_dir = Path(tempfile.mkdtemp(prefix="polling-bench-ws-"))
    stack = start_ws_stack(
        name="ws_fanout",
        work_dir=work_dir,
        extra_env={"REDIS_CHANNEL_LAYER": args.channel_layer},
        web_procs=args.web_procs,
        server=args.server,
    )
    try:
        result = fanout(
            stack,
            viewers=args.viewers,
            procs=args.procs,
            rounds=args.rounds,
            settle=args.settle,
            connect_concurrency=args.connect_concurrency,
            profile=args.profile.resolve() if args.profile else None,
        )
    finally:
        stack.stop()
    print(f"channel layer: {args.channel_layer}")
    print_fanout(result)
    print(f"(process logs in {work_dir})")


if __name__ == "__main__":
    main()
