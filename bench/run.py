"""The benchmark suite: one command, real services, figures beside their references.

    .venv/bin/python -m bench                 # everything: 20 minutes on the shared 2-core machine
    .venv/bin/python -m bench --quick         # smoke check: 1 short round, 3-6 minutes
    .venv/bin/python -m bench --profile /tmp/prof --only intake   # plus py-spy stacks
    .venv/bin/python -m bench --only intake,apply

Sections (--only takes a comma-separated list of these names):

    direct       0. the product's vote intake divided by the direct design's (bench/direct.py:
                    FastAPI + uvicorn with 2 workers + asyncpg, one UPDATE per vote), both on
                    the same PostgreSQL and cores, rounds alternated, with and without the
                    voter cookie; web CPU per vote
    intake       1. POST /polls/{id}/vote at 64 clients on one hot poll, beside the framework
                    floor (bench/floor: DRF validating the same body, no I/O) and the naive
                    design (in-process apply against PostgreSQL, no Kafka)
    apply        2. votes/s one worker applies from a pre-filled Kafka topic into PostgreSQL,
                    beside one transaction per vote
    viewers      3. intake while 1,000 WebSocket viewers watch the poll, beside nobody watching
    leaderboard  6. GET /leaderboard at a million votes and 100,000 polls, beside the floor GET
    memory       7. peak RSS (VmHWM from /proc) of the web processes and the worker under the
                    loads above (collected from whichever sections ran)
    cluster      8. (opt-in: only when named) section 1's intake with the vote topic on a
                    three-broker cluster (replication 3, min.insync.replicas 2) beside one
                    broker, rounds alternated, cores shared (bench/cluster.py)
    ws           4./5. the WebSocket latency and fan-out benchmarks (bench/ws_*.py), when present;
                    4 measures vote-to-screen twice: from the 204 of votes POSTed at 100 and
                    1,000 votes/s asked (the whole path, at what the intake sustains), and from
                    the broker's acknowledgement of 1,000 votes/s published straight to the
                    topic by a load process (the worker onwards, at the target rate)

It starts its own PostgreSQL, Redis and Kafka (devservices, a fresh temporary directory,
free ports), runs the web processes as production does (`python -m polling.serve`: uvicorn for
HTTP and WebSockets; `--server daphne` for the development server), and drives
load from separate generator processes on 127.0.0.1, every process on the same cores. Each
figure is the median of --runs rounds; references are measured in the same rounds,
interleaved, and shown as ratios (absolute figures drift on a shared 2-core machine;
ratios hold).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from bench import apply_rate, cluster, direct, intake, leaderboard, memory
from bench.common import Profiler, Row, add_experiment_args, experiment_env, log, print_table, summarize_profile
from testsupport.services import Services

SECTIONS = ["direct", "intake", "apply", "viewers", "leaderboard", "memory", "ws", "cluster"]
# Three more brokers are too much for the small machine beside everything else: run it by name.
OPT_IN_SECTIONS = {"cluster"}


@dataclass
class Context:
    services: Services
    work_dir: Path
    quick: bool
    runs: int
    duration: float
    warmup: float
    connections: int
    load_procs: int
    web_procs: int
    server: str
    viewers: int
    apply_events: int
    apply_polls: int
    apply_against: str | None
    apply_workers: int
    per_vote_events: int
    lb_polls: int
    lb_votes: int
    product_env: dict[str, str] = field(default_factory=dict)
    worker_args: list[str] = field(default_factory=list)
    memory: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def ws_server(self) -> str:
        """The server of the WebSocket sections: the same as the HTTP's."""
        return self.server


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one short round of everything (~3 minutes)")
    parser.add_argument("--only", default="", help=f"comma-separated sections: {','.join(SECTIONS)}")
    parser.add_argument("--runs", type=int, help="rounds per figure (default 3, quick 1)")
    parser.add_argument("--duration", type=float, help="measured seconds per load phase (default 10, quick 4)")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds before each phase (default 2, quick 1)")
    parser.add_argument("--connections", type=int, default=64, help="concurrent HTTP clients (default 64)")
    parser.add_argument("--load-procs", type=int, default=1, help="load generator processes (default 1)")
    parser.add_argument("--web-procs", type=int, default=1, help="web server processes on one socket (default 1)")
    parser.add_argument(
        "--server",
        choices=["uvicorn", "daphne"],
        default="uvicorn",
        help="the server of every section: uvicorn as production runs it (python -m polling.serve), "
        "or daphne, the development server",
    )
    parser.add_argument("--viewers", type=int, help="WebSocket viewers in section 3 (default 1000)")
    parser.add_argument(
        "--apply-events", type=int, help="events pre-filled for section 2 (default 200000, quick 20000)"
    )
    parser.add_argument(
        "--apply-polls", type=int, default=10, help="polls the pre-filled votes spread over (default 10)"
    )
    parser.add_argument(
        "--apply-workers",
        type=int,
        default=1,
        help="workers in section 2's consumer group, sharing the topic's partitions (default 1)",
    )
    parser.add_argument(
        "--apply-against",
        metavar="TREE",
        help="section 2 compares this tree's worker with the one in TREE (another checkout, "
        "e.g. a git worktree of main), rounds alternated, instead of the per-vote reference",
    )
    parser.add_argument("--lb-polls", type=int, help="polls for section 6 (default 100000, quick 10000)")
    parser.add_argument("--lb-votes", type=int, help="votes for section 6 (default 1000000, quick 100000)")
    add_experiment_args(parser)
    parser.add_argument(
        "--external-services",
        action="store_true",
        help="use DATABASE_URL (a role that may create databases), REDIS_URL, KAFKA_BROKERS",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="attach py-spy to the web processes and workers during each measured phase; "
        "collapsed stacks and a summary go to DIR",
    )
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: sample only the thread holding the GIL (py-spy --gil)",
    )
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (printed path)")
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()] or [
        s for s in SECTIONS if s not in OPT_IN_SECTIONS
    ]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    return args


def build_context(args: argparse.Namespace, services: Services, work_dir: Path) -> Context:
    quick = args.quick
    return Context(
        services=services,
        work_dir=work_dir,
        quick=quick,
        runs=args.runs or (1 if quick else 3),
        duration=args.duration or (4.0 if quick else 10.0),
        warmup=args.warmup or (1.0 if quick else 2.0),
        connections=args.connections,
        load_procs=args.load_procs,
        web_procs=args.web_procs,
        server=args.server,
        viewers=args.viewers or 1000,
        apply_events=args.apply_events or (20_000 if quick else 200_000),
        apply_polls=args.apply_polls,
        apply_against=args.apply_against,
        apply_workers=args.apply_workers,
        per_vote_events=2_000 if quick else 5_000,
        lb_polls=args.lb_polls or (10_000 if quick else 100_000),
        lb_votes=args.lb_votes or (100_000 if quick else 1_000_000),
        product_env=experiment_env(args),
        worker_args=list(args.worker_arg),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    load_before = os.getloadavg()
    needs_kafka = bool({"direct", "intake", "apply", "viewers", "ws", "cluster"} & set(args.sections))
    work_dir = Path(tempfile.mkdtemp(prefix="polling-bench-logs-"))
    if args.profile:
        Profiler.directory = Path(args.profile).resolve()
        Profiler.gil_only = args.profile_gil
        Profiler.directory.mkdir(parents=True, exist_ok=True)
    services = (
        Services.external() if args.external_services else Services.start(postgres=True, redis=True, kafka=needs_kafka)
    )
    ctx = build_context(args, services, work_dir)
    rows: list[Row] = []
    failures: list[str] = []

    def section(name: str, function) -> None:
        if name not in args.sections:
            return
        log(f"section {name} ...")
        started = time.monotonic()
        try:
            rows.extend(function(ctx))
        except Exception:  # noqa: BLE001 - report it and go on with the other sections
            failures.append(f"{name}: {traceback.format_exc()}")
            log(f"section {name} FAILED:\n{traceback.format_exc()}")
        log(f"section {name} done in {time.monotonic() - started:.0f} s")

    try:
        section("direct", direct.run_direct)
        section("intake", intake.run_intake)
        section("apply", apply_rate.run_apply)
        if "viewers" in args.sections and not intake.realtime_available():
            rows.append(
                Row(
                    "3 viewers",
                    "intake with 1,000 viewers",
                    float("nan"),
                    "",
                    note="pending: ws/polls/<id> is not routed yet",
                )
            )
        else:
            section("viewers", intake.run_viewers)
        section("leaderboard", leaderboard.run_leaderboard)
        section("ws", memory.run_ws_sections)
        section("cluster", cluster.run_cluster)
        if "memory" in args.sections:
            rows.extend(memory.memory_rows(ctx))
    finally:
        services.stop()
        if args.keep_logs or failures:
            log(f"process logs kept in {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)

    load_after = os.getloadavg()
    title = (
        f"polling benchmark ({'quick: 1 round' if ctx.quick else f'median of {ctx.runs} rounds'}, "
        f"{ctx.duration:.0f} s measured per phase after {ctx.warmup:.0f} s warm-up, {ctx.connections} clients, "
        f"server: {ctx.web_procs} x {ctx.server}; {os.cpu_count()} CPUs, load average {load_before[0]:.1f} at start, "
        f"{load_after[0]:.1f} at end; {time.monotonic() - began:.0f} s in all)"
    )
    print_table(rows, title=title)
    if args.json:
        Path(args.json).write_text(json.dumps([row.__dict__ for row in rows], indent=2, default=str))
    if args.profile:
        summaries = [
            summarize_profile(path) for path in sorted(Profiler.directory.glob("*.txt")) if path.name != "summary.txt"
        ]
        (Profiler.directory / "summary.txt").write_text("\n\n".join(summaries) + "\n")
        log(f"profiles (collapsed stacks) and summary.txt in {Profiler.directory}")
    for failure in failures:
        print(f"\nFAILED section {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
