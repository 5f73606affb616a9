"""Section 0: the product's vote intake beside the direct design, in one run.

The direct design is the seed's service written the plain way (bench/direct_service.py:
FastAPI on uvicorn with 2 workers, asyncpg, one atomic UPDATE per vote on the poll's row,
no Kafka). Both run on the same PostgreSQL server and the same cores (no pinning), the
product as --server serves it (the votes on their lean path) with Kafka and one vote
worker, and take the same load: N clients on one hot poll, the rate limits never
refusing (the load comes from one address), only 2xx answers counted. Rounds alternate
three phases, their order rotating: the product with clients that send no voter cookie
(each vote issues a token), the product with a returning voter's cookie, the direct
design (which ignores the cookie). Every vote answered 204 must be counted once.
"""

from __future__ import annotations

import json
import urllib.request

from bench.common import LoadResult, Row, log, median, paired_ratio, sql
from bench.direct_service import SCHEMA
from bench.intake import _accepted, _describe, _load, _ms_per_answer, _wait_counted, create_poll, start_stack
from testsupport.processes import REPO, SocketWebServer

PHASES = ["product", "product+cookie", "direct"]


def start_direct(ctx) -> tuple[SocketWebServer, str]:
    database_url = ctx.services.database_url("bench_direct_fastapi")
    sql(database_url, SCHEMA, fetch=False)
    env = {"DATABASE_URL": database_url, "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    server = SocketWebServer(
        name="direct", env=env, log_dir=ctx.work_dir, procs=2, server="uvicorn", app="bench.direct_service:app"
    )
    return server.start(), database_url


def voter_cookie(url: str) -> str:
    request = urllib.request.Request(
        f"{url}/voters", data=b"", method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return f"Cookie: voter={json.load(answer)['voter_token']}"


def run_direct(ctx) -> list[Row]:
    stack = start_stack(ctx, name="direct", floor=False, naive=False)
    direct = None
    results: dict[str, list[LoadResult]] = {phase: [] for phase in PHASES}
    try:
        direct, direct_db = start_direct(ctx)
        direct_poll = create_poll(direct.url)
        cookie = voter_cookie(stack.product.url)
        targets = {
            "product": (stack.product, stack.poll_id, ()),
            "product+cookie": (stack.product, stack.poll_id, (cookie,)),
            "direct": (direct, direct_poll, (cookie,)),
        }
        for round_index in range(ctx.runs):
            shift = round_index % len(PHASES)
            for phase in PHASES[shift:] + PHASES[:shift]:
                server, poll_id, headers = targets[phase]
                result = _load(
                    ctx,
                    server,
                    f"/polls/{poll_id}/vote",
                    poll_id,
                    headers=headers,
                    worker=stack.worker if server is stack.product else None,
                )
                results[phase].append(result)
                log(f"direct round {round_index + 1}/{ctx.runs} {phase}: {_describe(result)}")
        accepted = sum(_accepted(r) for phase in ("product", "product+cookie") for r in results[phase])
        rows, waited = _wait_counted(stack.database_url, stack.poll_id, accepted, timeout=120)
        direct_accepted = sum(_accepted(r) for r in results["direct"])
        direct_counted = sql(
            direct_db, "SELECT count1 + count2 + count3 + count4 FROM direct_poll WHERE id = %s", [direct_poll]
        )[0][0]
        ctx.memory["direct design (uvicorn, per worker)"] = direct.memory()
    finally:
        stack.stop()
        if direct is not None:
            direct.stop()

    def ratio(phase: str, attr: str) -> float:
        return paired_ratio([getattr(r, attr) for r in results[phase]], [getattr(r, attr) for r in results["direct"]])

    def med(phase: str, attr: str) -> float:
        return median([getattr(r, attr) for r in results[phase]])

    counted = (
        f"all {accepted:,} votes the product answered 204 are in PostgreSQL once ({rows:,} rows)"
        if rows == accepted
        else f"MISMATCH: the product answered {accepted:,} votes 204, {rows:,} rows after {waited:.0f} s"
    )
    direct_note = (
        f"direct: {direct_accepted:,} answered 204, counters add up to {direct_counted:,}; "
        f"product {ctx.server} + Kafka + worker, direct 2 uvicorn workers, cores shared"
    )
    c = ctx.connections
    out = []
    for phase, what in (
        ("product", "no voter cookie (a token issued per vote)"),
        ("product+cookie", "a returning voter's cookie"),
    ):
        rps_ratio, p99_ratio = ratio(phase, "rps"), ratio(phase, "p99_ms")
        out.append(
            Row(
                "0 vs direct",
                f"votes/s, {c} clients, 1 hot poll, {what}",
                med(phase, "rps"),
                "votes/s",
                "direct design (FastAPI, asyncpg)",
                med("direct", "rps"),
                rps_ratio,
                ">= 1.50x",
                rps_ratio >= 1.5,
                note=counted if phase == "product" else direct_note,
                runs=[r.rps for r in results[phase]],
            )
        )
        out.append(
            Row(
                "0 vs direct",
                f"latency p99, {what}",
                med(phase, "p99_ms"),
                "ms",
                "direct p99",
                med("direct", "p99_ms"),
                p99_ratio,
                "<= 1.00x",
                p99_ratio <= 1.0,
            )
        )
    cpu = {phase: median([_ms_per_answer(r.server_cpu_s, r) for r in rs]) for phase, rs in results.items()}
    for phase in ("product", "product+cookie"):
        out.append(
            Row(
                "0 vs direct",
                f"web CPU per vote, {phase}",
                cpu[phase],
                "ms",
                "direct: CPU per vote (2 workers)",
                cpu["direct"],
                cpu[phase] / cpu["direct"],
                "<= 0.35 ms",
                cpu[phase] <= 0.35,
            )
        )
    return out
