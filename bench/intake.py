"""Sections 1 and 3: vote intake on one hot poll, beside its references.

1. intake: POST /polls/{id}/vote at N concurrent clients (default 64) against

   - the product: the web server + the Kafka vote bus, with one vote worker applying meanwhile;
   - (a) the framework floor: the same server/Django/DRF stack serving
     /bench/floor/polls/{id}/vote (bench.floor: validates the same body, no I/O);
   - (b) the naive design: the embedded in-process mode (no KAFKA_BROKERS) against
     PostgreSQL, i.e. one synchronous vote transaction inside every request.

   The three are measured in turn within each round, the order rotating between rounds,
   so the machine's drift hits all of them alike; each figure is the median of the rounds.
   After the rounds, every vote answered 204 by the product must be in PostgreSQL once.

3. viewers: the product's intake while V WebSocket viewers (default 1,000) watch the hot
   poll on ws://.../ws/polls/<id>, beside the same intake with nobody watching, in turn.
"""

from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    LoadResult,
    Row,
    Viewers,
    Worker,
    django_env,
    http_load,
    log,
    manage,
    median,
    paired_ratio,
    section_env,
    sql,
)
from testsupport.processes import SocketWebServer, tree_cpu_seconds


def create_poll(base_url: str, question: str = "Which colour wins the benchmark?") -> int:
    body = {"question": question, "option1": "Red", "option2": "Blue", "option3": "Green", "option4": "Yellow"}
    request = urllib.request.Request(
        f"{base_url}/polls", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)["id"]


def vote_bodies(poll_id: int) -> list[str]:
    return [json.dumps({"poll_id": poll_id, "option": option}) for option in (1, 2, 3, 4)]


@dataclass
class Stack:
    """The product's processes for intake: web, worker, and optionally floor and naive."""

    product: SocketWebServer
    worker: Worker
    database_url: str
    poll_id: int
    floor: SocketWebServer | None = None
    naive: SocketWebServer | None = None
    naive_poll_id: int = 0

    @property
    def viewers_port(self) -> int:
        return self.product.port

    def stop(self) -> None:
        for process in (self.product, self.floor, self.naive, self.worker):
            if process is not None:
                process.stop()


def start_stack(ctx, *, name: str, floor: bool, naive: bool, viewers: bool = False, server: str | None = None) -> Stack:
    services = ctx.services
    server = server or ctx.server
    database_url, topic, env = section_env(services, name, extra=ctx.product_env)
    naive_env = None
    if naive:
        naive_db = services.database_url(f"bench_{name}_naive")
        naive_env = django_env(database_url=naive_db, redis=services.redis_url, extra=ctx.product_env)
    # Migrations of both databases side by side: each is a Django start-up.
    with ThreadPoolExecutor(max_workers=2) as pool:
        for future in [pool.submit(manage, e, "migrate", "--no-input") for e in (env, naive_env) if e is not None]:
            future.result()
    started: list = []
    try:
        # The worker first: it creates the topic, which the web process will not.
        worker = Worker(
            name=f"{name}-worker", env=env, log_dir=ctx.work_dir, group=f"bench-{topic}", extra=ctx.worker_args
        )
        started.append(worker)
        worker.start()
        servers = {
            "product": SocketWebServer(
                name=f"{name}-web", env=env, log_dir=ctx.work_dir, procs=ctx.web_procs, server=server
            )
        }
        if floor:
            floor_env = dict(env, DJANGO_SETTINGS_MODULE="bench.floor.settings")
            servers["floor"] = SocketWebServer(
                name=f"{name}-floor", env=floor_env, log_dir=ctx.work_dir, procs=ctx.web_procs, server=ctx.server
            )
        if naive_env is not None:
            servers["naive"] = SocketWebServer(
                name=f"{name}-naive", env=naive_env, log_dir=ctx.work_dir, procs=ctx.web_procs, server=ctx.server
            )
        started.extend(servers.values())
        with ThreadPoolExecutor(max_workers=len(servers)) as pool:
            for future in [pool.submit(server.start) for server in servers.values()]:
                future.result()
        stack = Stack(
            product=servers["product"],
            worker=worker,
            database_url=database_url,
            poll_id=create_poll(servers["product"].url),
            floor=servers.get("floor"),
            naive=servers.get("naive"),
        )
        if stack.naive is not None:
            stack.naive_poll_id = create_poll(stack.naive.url)
    except BaseException:
        for process in started:
            process.stop()
        raise
    return stack


def _load(
    ctx,
    server: SocketWebServer,
    path: str,
    poll_id: int,
    label: str = "",
    worker: Worker | None = None,
    headers: tuple[str, ...] = (),
) -> LoadResult:
    return http_load(
        port=server.port,
        paths=[path],
        bodies=vote_bodies(poll_id),
        headers=headers,
        connections=ctx.connections,
        duration=ctx.duration,
        warmup=ctx.warmup,
        procs=ctx.load_procs,
        work_dir=ctx.work_dir,
        server=server,
        label=label,
        others=_cpu_readers(ctx, worker),
        profile_also=[(worker.name, worker.pid)] if worker is not None else [],
    )


def _cpu_readers(ctx, worker: Worker | None) -> dict:
    """CPU-seconds readers of the processes beside the web server: the services this run started, the worker."""
    pids = {server.name: server.pid for server in ctx.services.servers if server.pid is not None}
    if worker is not None:
        pids["worker"] = worker.pid
    return {name: (lambda pid=pid: tree_cpu_seconds(pid)) for name, pid in pids.items()}


def _accepted(result: LoadResult) -> int:
    return result.extra["status_all"].get("204", 0)


def _wait_counted(database_url: str, poll_id: int, expected: int, timeout: float) -> tuple[int, float]:
    """Wait until the poll's vote rows reach `expected`; return (rows, seconds waited)."""
    began = time.monotonic()
    rows = 0
    while time.monotonic() - began < timeout:
        rows = sql(database_url, "SELECT count(*) FROM polls_vote WHERE poll_id = %s", [poll_id])[0][0]
        if rows >= expected:
            break
        time.sleep(0.25)
    return rows, time.monotonic() - began


def _describe(result: LoadResult) -> str:
    bad = {k: v for k, v in result.status.items() if not k.startswith("2")}
    text = f"{result.rps:.0f}/s p50 {result.p50_ms:.1f} p99 {result.p99_ms:.1f} ms"
    if bad or result.errors:
        text += f" (non-2xx {bad}, connection errors {result.errors})"
    return text


def run_intake(ctx) -> list[Row]:
    stack = start_stack(ctx, name="intake", floor=True, naive=True)
    results: dict[str, list[LoadResult]] = {"product": [], "floor": [], "naive": []}
    targets = {
        "floor": (stack.floor, f"/bench/floor/polls/{stack.poll_id}/vote", stack.poll_id),
        "product": (stack.product, f"/polls/{stack.poll_id}/vote", stack.poll_id),
        "naive": (stack.naive, f"/polls/{stack.naive_poll_id}/vote", stack.naive_poll_id),
    }
    order = ["floor", "product", "naive"]
    placement = "cores shared"
    try:
        for round_index in range(ctx.runs):
            for name in order[round_index % 3 :] + order[: round_index % 3]:
                server, path, poll_id = targets[name]
                result = _load(ctx, server, path, poll_id, worker=stack.worker)
                results[name].append(result)
                log(f"intake round {round_index + 1}/{ctx.runs} {name}: {_describe(result)}")
        accepted = sum(_accepted(r) for r in results["product"])
        rows, waited = _wait_counted(stack.database_url, stack.poll_id, accepted, timeout=120)
        ctx.memory["web (intake, Kafka bus)"] = stack.product.memory()
        ctx.memory["web (floor)"] = stack.floor.memory()
        ctx.memory["web (naive, in-process apply)"] = stack.naive.memory()
        ctx.memory["worker (during intake)"] = stack.worker.memory()
    finally:
        stack.stop()

    def med(name: str, attr: str) -> float:
        return median([getattr(r, attr) for r in results[name]])

    def ratio(name: str, reference: str, attr: str) -> float:
        return paired_ratio([getattr(r, attr) for r in results[name]], [getattr(r, attr) for r in results[reference]])

    product_rps, floor_rps, naive_rps = med("product", "rps"), med("floor", "rps"), med("naive", "rps")
    product_p50, product_p99 = med("product", "p50_ms"), med("product", "p99_ms")
    counted_note = (
        f"all {accepted:,} votes answered 204 are in PostgreSQL ({rows:,} rows, "
        f"worker caught up {waited:.1f} s after the load)"
        if rows == accepted
        else f"MISMATCH: {accepted:,} votes answered 204, {rows:,} rows after {waited:.0f} s"
    )
    errors = {name: _error_note(rs) for name, rs in results.items()}
    c = ctx.connections
    rows_out = [
        Row(
            "1 intake",
            f"votes/s, {c} clients, 1 hot poll",
            product_rps,
            "votes/s",
            "(a) framework floor (DRF, no I/O)",
            floor_rps,
            ratio("product", "floor", "rps"),
            ">= 0.70x",
            ratio("product", "floor", "rps") >= 0.7,
            note=f"{counted_note}; {placement}{errors['product']}",
            runs=[r.rps for r in results["product"]],
        ),
        Row(
            "1 intake",
            f"votes/s, {c} clients, 1 hot poll",
            product_rps,
            "votes/s",
            "(b) naive: in-process apply, PostgreSQL",
            naive_rps,
            ratio("product", "naive", "rps"),
            ">= 1.50x",
            ratio("product", "naive", "rps") >= 1.5,
            note=errors["naive"].lstrip("; "),
        ),
        Row(
            "1 intake",
            "latency p50",
            product_p50,
            "ms",
            "(a) floor p50",
            med("floor", "p50_ms"),
            ratio("product", "floor", "p50_ms"),
        ),
        Row(
            "1 intake",
            "latency p99",
            product_p99,
            "ms",
            "(a) floor p99",
            med("floor", "p99_ms"),
            ratio("product", "floor", "p99_ms"),
            "< 50 ms",
            product_p99 < 50,
            note=errors["floor"].lstrip("; "),
        ),
        Row(
            "1 intake",
            "latency p50",
            product_p50,
            "ms",
            "(b) naive p50",
            med("naive", "p50_ms"),
            ratio("product", "naive", "p50_ms"),
        ),
        Row(
            "1 intake",
            "latency p99",
            product_p99,
            "ms",
            "(b) naive p99",
            med("naive", "p99_ms"),
            ratio("product", "naive", "p99_ms"),
        ),
    ]
    # The generator's own ceiling: answers per CPU-second of the generator processes.
    all_results = [r for rs in results.values() for r in rs]
    ceiling = median([r.generator_ceiling_rps for r in all_results])
    fastest = max(r.rps for r in all_results)
    rows_out.append(
        Row(
            "1 intake",
            "load generator ceiling (answers per generator CPU-s)",
            ceiling,
            "req/s",
            "fastest rate measured",
            fastest,
            ceiling / fastest,
            ">= 3x",
            ceiling / fastest >= 3,
            note=f"{ctx.load_procs} generator process(es); the server side must be the bottleneck, not the generator",
        )
    )
    server_cpu = {name: median([_ms_per_answer(r.server_cpu_s, r) for r in rs]) for name, rs in results.items()}
    rows_out.append(
        Row(
            "1 intake",
            "web CPU per vote",
            server_cpu["product"],
            "ms",
            "(a) floor CPU per request",
            server_cpu["floor"],
            server_cpu["product"] / server_cpu["floor"],
            note=f"naive: {server_cpu['naive']:.2f} ms web CPU per vote (PostgreSQL's own CPU not included)",
        )
    )
    for name, rs in results.items():
        # Where the two cores went while each served its load: the web process, the
        # services and the worker beside it, the load generators (ms of CPU per answer).
        # The generators' CPU covers their warm-up as well.
        spent = {
            "web": [_ms_per_answer(r.server_cpu_s, r) for r in rs],
            "load generator": [
                _ms_per_answer(r.generator_cpu_s * r.window_s / (r.window_s + ctx.warmup), r) for r in rs
            ],
        }
        for process in rs[0].extra["cpu_s"]:
            spent[process] = [_ms_per_answer(r.extra["cpu_s"][process], r) for r in rs]
        total = sum(median(v) for v in spent.values())
        parts = ", ".join(f"{process} {median(v):.2f}" for process, v in spent.items())
        log(f"intake {name}: CPU per answer {total:.2f} ms in all: {parts}")
        rows_out.append(Row("1 intake", f"{name}: CPU per answer, all processes", total, "ms", note=parts))
    return rows_out


def _ms_per_answer(cpu_seconds: float, result: LoadResult) -> float:
    """Milliseconds of CPU per answer, from CPU seconds spent over the measured window."""
    return cpu_seconds / result.window_s / (result.rps or 1) * 1000


def _error_note(results: list[LoadResult]) -> str:
    bad: dict[str, int] = {}
    errors = 0
    for result in results:
        errors += result.errors
        for k, v in result.status.items():
            if not k.startswith("2"):
                bad[k] = bad.get(k, 0) + v
    if not bad and not errors:
        return ""
    return f"; non-2xx answers {bad}, connection errors {errors}"


def run_viewers(ctx) -> list[Row]:
    stack = start_stack(ctx, name="viewers", floor=False, naive=False, viewers=True)
    path = f"/polls/{stack.poll_id}/vote"
    watched: list[LoadResult] = []
    alone: list[LoadResult] = []
    viewer_reports: list[dict] = []
    try:
        for round_index in range(ctx.runs):
            first_alone = round_index % 2 == 0
            for phase in ("alone", "watched") if first_alone else ("watched", "alone"):
                if phase == "alone":
                    result = _load(ctx, stack.product, path, stack.poll_id, label=f"alone-{round_index + 1}")
                    alone.append(result)
                    log(f"viewers round {round_index + 1}/{ctx.runs} nobody watching: {_describe(result)}")
                    continue
                viewers = Viewers(
                    port=stack.viewers_port,
                    path=f"/ws/polls/{stack.poll_id}",
                    count=ctx.viewers,
                    max_seconds=ctx.warmup + ctx.duration + 120,
                ).start()
                try:
                    if viewers.connected < ctx.viewers:
                        log(f"only {viewers.connected} of {ctx.viewers} viewers connected")
                    time.sleep(1.0)
                    result = _load(ctx, stack.product, path, stack.poll_id, label=f"watched-{round_index + 1}")
                finally:
                    report = viewers.stop()
                report["connected"] = viewers.connected
                report["connect_s"] = viewers.connect_s
                viewer_reports.append(report)
                watched.append(result)
                per_viewer = (
                    report.get("messages", 0) / max(1, viewers.connected) / max(0.001, report.get("watched_s", 1))
                )
                log(
                    f"viewers round {round_index + 1}/{ctx.runs} {viewers.connected} watching: {_describe(result)}; "
                    f"{per_viewer:.1f} updates/s per viewer"
                )
                time.sleep(1.0)
        ctx.memory[f"web (intake + {ctx.viewers} viewers)"] = stack.product.memory()
        ctx.memory["worker (intake + viewers, broadcasting)"] = stack.worker.memory()
    finally:
        stack.stop()
    watched_rps = median([r.rps for r in watched])
    alone_rps = median([r.rps for r in alone])
    rps_ratio = paired_ratio([r.rps for r in watched], [r.rps for r in alone])
    connected = min(r["connected"] for r in viewer_reports)
    updates = median(
        [r.get("messages", 0) / max(1, r["connected"]) / max(0.001, r.get("watched_s", 1)) for r in viewer_reports]
    )
    slowest = max(r["connect_s"] for r in viewer_reports)
    client_cpu = median([r.get("cpu_s", 0) / max(0.001, r.get("watched_s", 1)) for r in viewer_reports])
    note = (
        f"{connected} of {ctx.viewers} viewers connected (slowest connect {slowest:.1f} s); "
        f"each received {updates:.1f} updates/s; viewers' client CPU {client_cpu * 100:.0f}% of a core"
    )
    return [
        Row(
            "3 viewers",
            f"votes/s with {ctx.viewers} viewers watching",
            watched_rps,
            "votes/s",
            "same intake, nobody watching",
            alone_rps,
            rps_ratio,
            ">= 0.80x",
            rps_ratio >= 0.8,
            note=note,
            runs=[r.rps for r in watched],
        ),
        Row(
            "3 viewers",
            "latency p99 with viewers",
            median([r.p99_ms for r in watched]),
            "ms",
            "p99 nobody watching",
            median([r.p99_ms for r in alone]),
            paired_ratio([r.p99_ms for r in watched], [r.p99_ms for r in alone]),
        ),
    ]


def realtime_available() -> bool:
    """Whether the product routes ws/polls/<id> (the realtime app may still be in the works)."""
    try:
        text = (Path(__file__).resolve().parent.parent / "realtime" / "routing.py").read_text()
    except OSError:
        return False
    return "ws/polls/" in text
