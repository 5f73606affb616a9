"""Section 6: GET /leaderboard at a million votes and 100,000 polls.

The data is generated inside PostgreSQL (generate_series, one INSERT ... SELECT per
table): P polls of 4 options and V vote rows spread over the options with a skew (a few
options get most votes, as in real traffic), then every option counter is set to the
number of its vote rows, so counters and rows agree as the product's invariant demands.
The INSERTs name the columns from the product's models at run time (a nullable column is
left NULL, one with a default gets it), so the loader follows schema changes.

Reads are measured at 1 client (the latency of one request on an idle server) and at
the intake's client count (throughput under load), beside the framework floor's GET
(bench.floor: a leaderboard-shaped answer from memory, same server stack), interleaved.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time

from bench.common import PYTHON, Row, http_load, log, manage, median, paired_ratio, section_env
from testsupport.processes import REPO, SocketWebServer


def run_leaderboard(ctx) -> list[Row]:
    services = ctx.services
    database_url, _, env = section_env(services, "leaderboard", topic=False, extra=ctx.product_env)
    manage(env, "migrate", "--no-input")
    began = time.monotonic()
    result = subprocess.run(
        [PYTHON, "-m", "bench.leaderboard", "load", "--polls", str(ctx.lb_polls), "--votes", str(ctx.lb_votes)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if result.returncode != 0:
        raise RuntimeError(f"loading the leaderboard data failed:\n{result.stderr[-4000:]}")
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    log(
        f"leaderboard: {loaded['polls']:,} polls, {loaded['options']:,} options, {loaded['votes']:,} votes loaded "
        f"in {time.monotonic() - began:.0f} s; counters differing from rows: {loaded['mismatches']}"
    )
    product = SocketWebServer(
        name="leaderboard-web", env=env, log_dir=ctx.work_dir, procs=ctx.web_procs, server=ctx.server
    ).start()
    floor = SocketWebServer(
        name="leaderboard-floor",
        env=dict(env, DJANGO_SETTINGS_MODULE="bench.floor.settings"),
        log_dir=ctx.work_dir,
        procs=ctx.web_procs,
        server=ctx.server,
    ).start()
    results: dict[tuple[str, int], list] = {}
    try:
        for round_index in range(ctx.runs):
            for clients in (1, ctx.connections):
                for name, server, path in (
                    ("product", product, "/leaderboard"),
                    ("floor", floor, "/bench/floor/leaderboard"),
                ):
                    outcome = http_load(
                        port=server.port,
                        paths=[path],
                        method="GET",
                        connections=clients,
                        duration=ctx.duration,
                        warmup=ctx.warmup,
                        procs=ctx.load_procs,
                        work_dir=ctx.work_dir,
                        server=server,
                    )
                    results.setdefault((name, clients), []).append(outcome)
                    log(
                        f"leaderboard round {round_index + 1}/{ctx.runs} {name} at {clients} client(s): "
                        f"{outcome.rps:.0f}/s p50 {outcome.p50_ms:.2f} p99 {outcome.p99_ms:.2f} ms {outcome.status}"
                    )
        ctx.memory["web (leaderboard reads)"] = product.memory()
    finally:
        product.stop()
        floor.stop()

    def med(name: str, clients: int, attr: str) -> float:
        return median([getattr(r, attr) for r in results[(name, clients)]])

    def ratio(clients: int, attr: str) -> float:
        return paired_ratio(
            [getattr(r, attr) for r in results[("product", clients)]],
            [getattr(r, attr) for r in results[("floor", clients)]],
        )

    c = ctx.connections
    size = f"{loaded['votes']:,} votes, {loaded['polls']:,} polls"
    p50, p99 = med("product", 1, "p50_ms"), med("product", 1, "p99_ms")
    bad = sum(v for rs in results.values() for r in rs for k, v in r.status.items() if not k.startswith("2"))
    return [
        Row(
            "6 leaderboard",
            "GET /leaderboard p50, 1 client",
            p50,
            "ms",
            "floor GET p50 (no query)",
            med("floor", 1, "p50_ms"),
            ratio(1, "p50_ms"),
            "< 10 ms",
            p50 < 10,
            note=f"{size}; counters equal vote rows: {'yes' if loaded['mismatches'] == 0 else 'NO'}"
            + (f"; {bad} non-2xx answers" if bad else ""),
        ),
        Row(
            "6 leaderboard",
            "GET /leaderboard p99, 1 client",
            p99,
            "ms",
            "floor GET p99",
            med("floor", 1, "p99_ms"),
            ratio(1, "p99_ms"),
        ),
        Row(
            "6 leaderboard",
            f"GET /leaderboard req/s, {c} clients",
            med("product", c, "rps"),
            "req/s",
            "floor GET req/s",
            med("floor", c, "rps"),
            ratio(c, "rps"),
        ),
        Row(
            "6 leaderboard",
            f"GET /leaderboard p50 / p99, {c} clients",
            med("product", c, "p50_ms"),
            "ms",
            "floor GET p50",
            med("floor", c, "p50_ms"),
            ratio(c, "p50_ms"),
            note=f"p99 at {c} clients: {med('product', c, 'p99_ms'):.1f} ms (floor {med('floor', c, 'p99_ms'):.1f} ms)",
        ),
    ]


# --- the loader (a Django process) ---------------------------------------------------------


def _columns(model, known: dict[str, str]) -> tuple[list[str], list[str], list]:
    """(columns, SQL expressions, parameters) for an INSERT ... SELECT into model's table."""
    from django.db import connection

    columns, expressions, params = [], [], []
    for f in model._meta.concrete_fields:
        if f.primary_key and f.name not in known:
            continue
        if f.name in known:
            expressions.append(known[f.name])
        elif getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
            expressions.append("now()")
        elif f.null:
            continue
        elif f.has_default():
            expressions.append("%s")
            params.append(f.get_db_prep_value(f.get_default(), connection))
        else:
            raise RuntimeError(f"{model.__name__}.{f.name} is required and the loader has no value for it")
        columns.append(connection.ops.quote_name(f.column))
    return columns, expressions, params


def load(polls: int, votes: int) -> dict:
    from django.db import connection, transaction

    from polls.models import Option, Poll, Vote

    poll_table, option_table, vote_table = (connection.ops.quote_name(m._meta.db_table) for m in (Poll, Option, Vote))
    option_fk = connection.ops.quote_name(Option._meta.get_field("poll").column)
    vote_option_fk = Vote._meta.get_field("option").column
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
        cursor.execute("SET maintenance_work_mem = '256MB'")
        with transaction.atomic():
            columns, expressions, params = _columns(
                Poll,
                {
                    "question": "'Benchmark poll ' || g || ': which colour?'",
                    "created_at": "now() - g * interval '1 second'",
                },
            )
            cursor.execute(
                f"INSERT INTO {poll_table} ({', '.join(columns)}) SELECT {', '.join(expressions)} "
                f"FROM generate_series(1, %s) AS g",
                [*params, polls],
            )
            columns, expressions, params = _columns(
                Option,
                {
                    "poll": "p.id",
                    "position": "pos",
                    "text": "(ARRAY['Red', 'Blue', 'Green', 'Yellow'])[pos]",
                    "votes": "0",
                },
            )
            cursor.execute(
                f"INSERT INTO {option_table} ({', '.join(columns)}) SELECT {', '.join(expressions)} "
                f"FROM {poll_table} p CROSS JOIN generate_series(1, 4) AS pos",
                params,
            )
            vote_known = {
                "vote_id": "r.u",
                "ballot_id": "r.u",
                "poll": "o.poll_id",
                "option": "o.id",
                "voter_key": "'bench:' || r.g",
                "cast_at": "now()",
                "applied_at": "now()",
            }
            columns, expressions, params = _columns(Vote, vote_known)
            # A skewed choice of option: floor(n * random()^3) favours the first options.
            cursor.execute(
                f"""
                WITH o AS (SELECT id, {option_fk} AS poll_id,
                                  row_number() OVER (ORDER BY id) - 1 AS idx FROM {option_table})
                INSERT INTO {vote_table} ({", ".join(columns)})
                SELECT {", ".join(expressions)}
                FROM (SELECT g, gen_random_uuid() AS u,
                             floor(power(random(), 3) * (SELECT count(*) FROM o))::bigint AS idx
                      FROM generate_series(1, %s) AS g OFFSET 0) r
                JOIN o ON o.idx = r.idx
                """,
                [*params, votes],
            )
            cursor.execute(
                f"UPDATE {option_table} AS t SET votes = v.c FROM "
                f"(SELECT {vote_option_fk} AS option_id, count(*) AS c FROM {vote_table} GROUP BY 1) v "
                "WHERE t.id = v.option_id"
            )
            poll_total = connection.ops.quote_name(Poll._meta.get_field("total").column)
            cursor.execute(
                f"UPDATE {poll_table} AS p SET {poll_total} = s.total FROM "
                f"(SELECT {option_fk} AS poll_id, sum(votes) AS total FROM {option_table} GROUP BY 1) s "
                "WHERE p.id = s.poll_id"
            )
        cursor.execute(f"VACUUM ANALYZE {poll_table}")
        cursor.execute(f"VACUUM ANALYZE {option_table}")
        cursor.execute(f"VACUUM ANALYZE {vote_table}")
        cursor.execute(
            f"SELECT count(*) FROM {option_table} t LEFT JOIN "
            f"(SELECT {vote_option_fk} AS option_id, count(*) AS c FROM {vote_table} GROUP BY 1) v "
            "ON v.option_id = t.id "
            f"WHERE t.votes <> coalesce(v.c, 0)"
        )
        mismatches = cursor.fetchone()[0]
        cursor.execute(
            f"SELECT (SELECT count(*) FROM {poll_table}), (SELECT count(*) FROM {option_table}), "
            f"(SELECT count(*) FROM {vote_table})"
        )
        poll_count, option_count, vote_count = cursor.fetchone()
    return {"polls": poll_count, "options": option_count, "votes": vote_count, "mismatches": mismatches}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.leaderboard")
    sub = parser.add_subparsers(dest="command", required=True)
    loader = sub.add_parser("load", help="generate the polls, options and votes in PostgreSQL")
    loader.add_argument("--polls", type=int, default=100_000)
    loader.add_argument("--votes", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    import django

    django.setup()
    print(json.dumps(load(args.polls, args.votes)), flush=True)


if __name__ == "__main__":
    main()
