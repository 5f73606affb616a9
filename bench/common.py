"""What every benchmark section shares: process environments, load, profiles, stats.

Services and processes come from testsupport (services.py, processes.py), as in the tests.

Nothing here is a test: the sections print figures. Everything runs on 127.0.0.1 in
temporary directories, on free ports, and stops what it started.
"""

from __future__ import annotations

import array
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from testsupport.processes import (
    REPO,
    ManagedProcess,
    SocketWebServer,
    WorkerProcess,
    wait_until,
)

PYTHON = sys.executable
SECRET_KEY = "bench-only-secret-key-not-for-production-0123456789abcdef"


def add_experiment_args(parser) -> None:
    """--env and --worker-arg: what an A/B run changes in the product's processes."""
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the product's web and worker processes (experiments)",
    )
    parser.add_argument(
        "--worker-arg",
        action="append",
        default=[],
        help="extra consume_votes argument, e.g. --worker-arg=--batch-wait-ms=20",
    )


def experiment_env(args) -> dict[str, str]:
    """The --env pairs as a dict."""
    return dict(item.split("=", 1) for item in args.env)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def section_env(
    services, name: str, *, topic: bool = True, extra: dict[str, str] | None = None
) -> tuple[str, str | None, dict[str, str]]:
    """A section's own database (and vote topic) on the run's services: (database URL,
    topic, the product's environment)."""
    topic_name = f"bench-{name}-{uuid.uuid4().hex[:8]}" if topic else None
    database_url = services.database_url(f"bench_{name}")
    env = django_env(
        database_url=database_url,
        kafka=services.kafka_bootstrap,
        redis=services.redis_url,
        topic=topic_name,
        extra=extra,
    )
    return database_url, topic_name, env


def django_env(
    *,
    database_url: str | None,
    kafka: str | None = None,
    redis: str | None = None,
    topic: str | None = None,
    settings_module: str = "polling.settings",
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a production process (DEBUG off) of the given shape."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BROKERS", "REDIS_URL", "KAFKA_TOPIC")
    }
    env.update(
        SECRET_KEY=SECRET_KEY,
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DEBUG="0",
        LOG_LEVEL="INFO",  # the product's default: what production logs, it pays for
        DJANGO_SETTINGS_MODULE=settings_module,
        PYTHONPATH=str(REPO),
        # The load comes from one address: rate limits stay on (their cache round trips
        # are part of the vote's cost) but so high that they never refuse a vote.
        RATE_LIMIT_VOTES_PER_ADDRESS="1000000000/min",
        RATE_LIMIT_VOTES_PER_VOTER="1000000000/min",
        RATE_LIMIT_NEW_VOTERS_PER_ADDRESS="1000000000/min",
        RATE_LIMIT_POLLS_PER_ADDRESS="1000000000/min",
    )
    if database_url:
        env["DATABASE_URL"] = database_url
    if kafka:
        env["KAFKA_BROKERS"] = kafka
    if redis:
        env["REDIS_URL"] = redis
    if topic:
        env["KAFKA_TOPIC"] = topic
    env.update(extra or {})
    return env


def manage(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    result = subprocess.run(
        [PYTHON, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def sql(database_url: str, statement: str, params: Sequence | None = None, *, fetch: bool = True):
    import psycopg

    conn = psycopg.connect(database_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement, params)
            return cursor.fetchall() if fetch and cursor.description else None
    finally:
        conn.close()


# --- processes -----------------------------------------------------------------------------


class Worker(WorkerProcess):
    """`manage.py consume_votes` as the bench runs it: the product's own --batch-wait-ms,
    BENCH_PYTHON's interpreter if set, from `repo` (another checkout for an A/B run)."""

    def __init__(
        self, *, name: str, env: dict[str, str], log_dir: Path, group: str, extra: Sequence[str] = (), repo: Path = REPO
    ) -> None:
        super().__init__(
            env=env,
            log_dir=log_dir,
            group=group,
            name=name,
            extra=extra,
            batch_wait_ms=None,
            python=env.get("BENCH_PYTHON", PYTHON),
            cwd=repo,
        )

    def start(self, timeout: float = 60, *, wait: bool = True) -> Worker:
        """Start and (with wait) wait for its "consuming" log line (at INFO), at most `timeout` s."""
        ManagedProcess.start(self)
        if wait:
            self.wait_consuming(timeout)
        return self

    def wait_consuming(self, timeout: float = 60) -> Worker:
        try:
            wait_until(
                lambda: "consuming" in self.log() or not self.alive(), timeout=timeout, what=f"{self.name} to consume"
            )
        except AssertionError:  # wait_until's timeout
            log(f"{self.name} never logged 'consuming' (LOG_LEVEL above INFO?); going on")
        if not self.alive():
            raise RuntimeError(f"{self.name} exited:\n{self.log()[-3000:]}")
        return self


# --- profiling ---------------------------------------------------------------------------


class Profiler:
    """py-spy attached to running processes for a while (`python -m bench --profile DIR`).

    Writes collapsed stacks (`<name>-<pid>.txt`, for flame graph tools or summarize())
    and nothing else; a process is not slowed by more than the sampling (--nonblocking).
    """

    directory: Path | None = None
    rate = 250
    # Only the thread holding the GIL (py-spy --gil): where a GIL-bound process's one core goes.
    gil_only = False

    @classmethod
    def attach(cls, name: str, pids: Sequence[int], seconds: float) -> list[subprocess.Popen]:
        if cls.directory is None:
            return []
        spy = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
        running = []
        for pid in pids:
            out = cls.directory / f"{name}-{pid}.txt"
            running.append(
                subprocess.Popen(
                    [
                        spy,
                        "record",
                        "--pid",
                        str(pid),
                        "--duration",
                        str(max(1, int(seconds))),
                        "--rate",
                        str(cls.rate),
                        "--nonblocking",
                        "--format",
                        "raw",
                        "--output",
                        str(out),
                        *(["--gil"] if cls.gil_only else []),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        return running

    @staticmethod
    def wait(running: list[subprocess.Popen]) -> None:
        for popen in running:
            try:
                popen.wait(60)
            except subprocess.TimeoutExpired:
                popen.kill()


def summarize_profile(path: Path, top: int = 30) -> str:
    """The functions with the most samples in a collapsed-stack file, inclusive and self."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
    lines = [f"{path.name}: {total} samples"]
    for frame, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * n / total:5.1f}% incl {100 * own.get(frame, 0) / total:5.1f}% self  {frame[:150]}")
    return "\n".join(lines)


# --- load ----------------------------------------------------------------------------------


@dataclass
class LoadResult:
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    answers: int
    status: dict[str, int]
    errors: int
    generator_cpu_s: float
    window_s: float
    server_cpu_s: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def generator_ceiling_rps(self) -> float:
        """Answers per second one generator core could drive, from its CPU per answer."""
        if self.generator_cpu_s <= 0:
            return float("inf")
        return self.answers / self.generator_cpu_s

    @property
    def ok_fraction(self) -> float:
        good = sum(v for k, v in self.status.items() if k.startswith("2"))
        return good / self.answers if self.answers else 0.0


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def http_load(
    *,
    port: int,
    paths: Sequence[str],
    bodies: Sequence[str] = (),
    method: str = "POST",
    headers: Sequence[str] = (),
    connections: int = 64,
    duration: float = 10.0,
    warmup: float = 2.0,
    procs: int = 1,
    work_dir: Path,
    server: SocketWebServer | None = None,
    label: str = "",
    others: dict[str, Callable[[], float]] | None = None,
    profile_also: Sequence[tuple[str, int]] = (),
) -> LoadResult:
    """Closed-loop HTTP load from `procs` generator processes; returns merged figures.

    `label` names the phase in the server's profile file (--profile), so two phases on
    one server (the viewers section: nobody watching, then watched) keep both.
    `others` maps names to readers of other processes' CPU seconds (the services, the
    worker): what each spent in the measured window goes to `extra["cpu_s"]`.
    `profile_also` names more (name, pid) processes for --profile (the worker).
    """
    start_at = time.time() + 1.0  # the generator processes' interpreters start meanwhile
    generators = []
    per_proc = [connections // procs + (1 if i < connections % procs else 0) for i in range(procs)]
    for index, count in enumerate(per_proc):
        latency_file = work_dir / f"latencies-{os.getpid()}-{index}-{time.monotonic_ns()}.bin"
        args = [
            PYTHON,
            "-m",
            "bench.loadgen",
            "http",
            "--port",
            str(port),
            "--method",
            method,
            "--connections",
            str(count),
            "--start-at",
            f"{start_at:.6f}",
            "--warmup",
            str(warmup),
            "--duration",
            str(duration),
            "--latencies",
            str(latency_file),
        ]
        for path in paths:
            args += ["--path", path]
        for body in bodies:
            args += ["--body", body]
        for header in headers:
            args += ["--header", header]
        generators.append(
            (subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), latency_file)
        )
    cpu_server_before = server_cpu_at_window = 0.0
    others_cpu: dict[str, float] = {}
    if server is not None:
        # Server CPU over the measured window only.
        time.sleep(max(0.0, start_at + warmup - time.time()))
        cpu_server_before = server.cpu_seconds()
        others_before = {name: read() for name, read in (others or {}).items()}
        target = paths[0].strip("/").replace("/", "_")
        spies = Profiler.attach(
            f"{server.name}-{target}{'-' + label if label else ''}", server.serving_pids(), duration
        )
        for name, pid in profile_also:
            spies += Profiler.attach(
                f"{name}-during-{server.name}-{target}{'-' + label if label else ''}", [pid], duration
            )
        time.sleep(max(0.0, start_at + warmup + duration - time.time()))
        server_cpu_at_window = server.cpu_seconds() - cpu_server_before
        others_cpu = {name: read() - others_before[name] for name, read in (others or {}).items()}
        Profiler.wait(spies)
    latencies = array.array("f")
    answers = errors = 0
    cpu = 0.0
    status: dict[str, int] = {}
    status_all: dict[str, int] = {}
    for popen, latency_file in generators:
        out, err = popen.communicate(timeout=warmup + duration + 120)
        if popen.returncode != 0:
            raise RuntimeError(f"load generator failed:\n{err}")
        result = json.loads(out.strip().splitlines()[-1])
        answers += result["answers"]
        errors += result["errors"]
        cpu += result["cpu_s"]
        for k, v in result["status"].items():
            status[k] = status.get(k, 0) + v
        for k, v in result["status_all"].items():
            status_all[k] = status_all.get(k, 0) + v
        with open(latency_file, "rb") as data:
            latencies.frombytes(data.read())
        latency_file.unlink()
    ordered = sorted(latencies)
    return LoadResult(
        rps=answers / duration,
        p50_ms=percentile(ordered, 50) / 1000,
        p90_ms=percentile(ordered, 90) / 1000,
        p99_ms=percentile(ordered, 99) / 1000,
        answers=answers,
        status=status,
        errors=errors,
        generator_cpu_s=cpu,
        window_s=duration,
        server_cpu_s=server_cpu_at_window,
        extra={"status_all": status_all, "cpu_s": others_cpu},
    )


class Viewers:
    """N WebSocket viewers in a separate process, kept connected until stop()."""

    def __init__(self, *, port: int, path: str, count: int, max_seconds: float, connect_concurrency: int = 100) -> None:
        self.args = [
            PYTHON,
            "-m",
            "bench.loadgen",
            "viewers",
            "--port",
            str(port),
            "--path",
            path,
            "--count",
            str(count),
            "--duration",
            str(max_seconds),
            "--connect-concurrency",
            str(connect_concurrency),
        ]
        self.popen: subprocess.Popen | None = None
        self.connected = 0
        self.connect_s = 0.0

    def start(self, timeout: float = 120) -> Viewers:
        self.popen = subprocess.Popen(self.args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        line = self.popen.stderr.readline()  # printed once every viewer is connected or failed
        if not line or time.monotonic() > deadline:
            raise RuntimeError(f"viewers did not connect: {line!r}")
        info = json.loads(line)
        self.connected, self.connect_s = info["connected"], info["connect_s"]
        return self

    def stop(self) -> dict:
        if self.popen is None or self.popen.poll() is not None:
            return {}
        self.popen.send_signal(signal.SIGTERM)
        out, _ = self.popen.communicate(timeout=30)
        lines = out.strip().splitlines()
        return json.loads(lines[-1]) if lines else {}

    @property
    def pid(self) -> int:
        return self.popen.pid


# --- figures -------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


def paired_ratio(values: Sequence[float], references: Sequence[float]) -> float:
    """The median of each round's figure over the reference measured in that same round.

    On a shared machine whose speed drifts between rounds, pairing cancels the drift
    that a ratio of the two medians would keep.
    """
    return median([v / r for v, r in zip(values, references) if r])


@dataclass
class Row:
    """One line of the printed table: a figure beside its reference, as a ratio."""

    section: str
    metric: str
    value: float
    unit: str
    reference: str = ""
    reference_value: float | None = None
    ratio: float | None = None
    target: str = ""
    ok: bool | None = None
    note: str = ""
    runs: list[float] = field(default_factory=list)


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if value != value:
        return "n/a"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def print_table(rows: Sequence[Row], *, title: str, out=sys.stdout) -> None:
    header = ["section", "figure (median)", "value", "reference (same run)", "ref value", "ratio", "target", "ok"]
    lines = []
    for row in rows:
        lines.append(
            [
                row.section,
                row.metric,
                fmt(row.value, row.unit),
                row.reference or "-",
                fmt(row.reference_value, row.unit) if row.reference_value is not None else "-",
                f"{row.ratio:.2f}x" if row.ratio is not None and row.ratio == row.ratio else "-",
                row.target or "-",
                {True: "yes", False: "NO", None: "-"}[row.ok],
            ]
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    rule = "+".join("-" * (w + 2) for w in widths)
    print(f"\n{title}", file=out)
    print(rule, file=out)
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)), file=out)
    print(rule, file=out)
    last_section = None
    for row, line in zip(rows, lines):
        if last_section is not None and row.section != last_section:
            print(rule, file=out)
        last_section = row.section
        print(" | ".join(cell.ljust(w) for cell, w in zip(line, widths)), file=out)
    print(rule, file=out)
    print("  ratio = median over the rounds of (figure / its reference measured in the same round)", file=out)
    notes = [(row.section, row.metric, row.note) for row in rows if row.note]
    for section, metric, note in notes:
        print(f"  * {section} / {metric}: {note}", file=out)
    out.flush()
