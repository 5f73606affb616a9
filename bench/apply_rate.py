"""Section 2: how fast one vote worker applies votes from Kafka into PostgreSQL.

The vote topic is pre-filled once with N valid vote events (the product's own VoteEvent
wire format, keyed by poll), spread over P polls of 4 options. Each round then empties
the vote rows and counters, starts one `manage.py consume_votes` under a new consumer
group (so it reads the topic from the start) and times it from the first counted vote
until all N are counted, reading the option counters (40 rows, cheap) every 50 ms over one connection.

The reference, in the same rounds: one transaction per vote, i.e. the product's
votes_apply called with one event at a time from a separate process, straight from
memory (no Kafka, no offset commits: the most generous per-vote baseline), for at most
the phase duration.

Helpers run as Django processes (`python -m bench.apply_rate setup|prefill|per-vote`)
with the product's environment; the runner itself never imports Django.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
import uuid
from pathlib import Path

from bench.common import PYTHON, Profiler, Row, Worker, log, manage, median, paired_ratio, section_env, sql
from testsupport.processes import REPO, proc_cpu_seconds, tree_cpu_seconds


def _helper(env: dict[str, str], *args: str, timeout: float = 900) -> dict:
    result = subprocess.run(
        [PYTHON, "-m", "bench.apply_rate", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise RuntimeError(f"bench.apply_rate {args[0]} failed:\n{result.stdout}\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


_COUNTED = "SELECT coalesce(sum(votes), 0) FROM polls_option WHERE poll_id = ANY(%s)"


def _counted(database_url: str, poll_ids: list[int]) -> int:
    return int(sql(database_url, _COUNTED, [poll_ids])[0][0])


def _reset(database_url: str) -> None:
    sql(database_url, "TRUNCATE polls_vote", fetch=False)
    sql(database_url, "UPDATE polls_option SET votes = 0", fetch=False)
    sql(database_url, "UPDATE polls_poll SET version = 0, state_version = 0, total = 0", fetch=False)
    sql(database_url, "VACUUM ANALYZE polls_option", fetch=False)


def _cpu(workers: list[Worker], postgres_pid: int | None) -> tuple[float, float]:
    """CPU seconds so far of the worker processes together and of the whole PostgreSQL server."""
    return (
        sum(proc_cpu_seconds(worker.pid) for worker in workers),
        tree_cpu_seconds(postgres_pid) if postgres_pid else float("nan"),
    )


def _workers(ctx) -> str:
    return "one worker" if ctx.apply_workers == 1 else f"{ctx.apply_workers} workers in one group"


def _cpu_note(ctx, cpu_us: dict[str, float]) -> str:
    workers = "worker" if ctx.apply_workers == 1 else f"{ctx.apply_workers} workers"
    return (
        f"CPU per vote: {workers} {cpu_us['worker']:.1f} us, PostgreSQL {cpu_us['postgres']:.1f} us "
        f"({cpu_us['cores']:.2f} cores)"
    )


def _time_worker(
    ctx,
    env: dict[str, str],
    database_url: str,
    poll_ids: list[int],
    total: int,
    group: str,
    name: str,
    repo: Path = REPO,
):
    """Votes/s from the first counted vote to the last, and the CPU spent meanwhile.

    With ctx.apply_workers > 1, that many workers share the group (and the topic's
    partitions); their CPU is added up and the memory is the largest one's.
    """
    workers = [
        Worker(
            name=name if n == 0 else f"{name}-{n + 1}",
            env=env,
            log_dir=ctx.work_dir,
            group=group,
            extra=ctx.worker_args,
            repo=repo,
        )
        for n in range(ctx.apply_workers)
    ]
    for worker in workers:  # all at once: the first would otherwise apply while the next starts
        worker.start(wait=False)
    for worker in workers:
        worker.wait_consuming()
    spies = Profiler.attach(name, [worker.pid for worker in workers], 10)
    postgres_pid = ctx.services.postgres_pid()
    # One connection for all the looks: a connection per look cost PostgreSQL 6.5 ms of
    # CPU (a backend started for each) and this process 5 ms, so the 20 looks a second
    # added about 5 us to the 25 to 30 us per vote it charged PostgreSQL, and took a
    # tenth of a core from the worker.
    import psycopg

    counter = psycopg.connect(database_url, autocommit=True)
    try:
        deadline = time.monotonic() + 600
        first_at = None
        first_count = 0
        count = 0
        while time.monotonic() < deadline:
            count = int(counter.execute(_COUNTED, [poll_ids]).fetchone()[0])
            now = time.monotonic()
            if first_at is None and count > 0:
                first_at, first_count = now, count
                cpu_first = _cpu(workers, postgres_pid)
            if count >= total:
                break
            for worker in workers:
                if not worker.alive():
                    raise RuntimeError(f"{worker.name} exited:\n{worker.log()[-3000:]}")
            time.sleep(0.05)
        done_at = time.monotonic()
        cpu_done = _cpu(workers, postgres_pid)
        memories = [worker.memory() for worker in workers]
        memory = {key: max(m[key] for m in memories) for key in memories[0]}
    finally:
        counter.close()
        Profiler.wait(spies)
        for worker in workers:
            worker.stop()
    if count < total:
        raise RuntimeError(f"worker counted {count} of {total} votes in 600 s")
    seconds = max(done_at - first_at, 1e-3)
    votes = total - first_count
    if votes == 0:
        raise RuntimeError(
            f"all {total:,} votes were counted at the first look: too few to time, pre-fill more (--apply-events)"
        )
    # Microseconds of CPU per vote: the worker process, PostgreSQL (every backend, the
    # counting queries of this loop and background work included).
    cpu_us = {
        who: (done - first) / votes * 1e6 for who, done, first in zip(("worker", "postgres"), cpu_done, cpu_first)
    }
    cpu_us["cores"] = sum(done - first for done, first in zip(cpu_done, cpu_first)) / seconds
    return votes / seconds, seconds, memory, cpu_us


def run_apply(ctx) -> list[Row]:
    services = ctx.services
    database_url, topic, env = section_env(services, "apply", extra=ctx.product_env)
    manage(env, "migrate", "--no-input")
    setup = _helper(env, "setup", "--polls", str(ctx.apply_polls))
    poll_ids = setup["poll_ids"]
    prefill = _helper(env, "prefill", "--count", str(ctx.apply_events), "--poll-ids", ",".join(map(str, poll_ids)))
    log(
        f"apply: {ctx.apply_events:,} events pre-filled over {len(poll_ids)} polls in {prefill['seconds']:.1f} s "
        f"({prefill['rate']:,.0f}/s)"
    )
    if ctx.apply_against:
        return _run_against(ctx, env, database_url, poll_ids)
    batched: list[float] = []
    per_vote: list[float] = []
    consistent = True
    for round_index in range(ctx.runs):
        _reset(database_url)
        rate, seconds, memory, cpu_us = _time_worker(
            ctx,
            env,
            database_url,
            poll_ids,
            ctx.apply_events,
            group=f"bench-apply-{round_index}-{uuid.uuid4().hex[:6]}",
            name=f"apply-worker-{round_index}",
        )
        rows = sql(database_url, "SELECT count(*) FROM polls_vote")[0][0]
        consistent &= rows == _counted(database_url, poll_ids)
        batched.append(rate)
        previous = ctx.memory.get("worker (apply, batched)", {"rss_mb": 0, "peak_mb": 0})
        ctx.memory["worker (apply, batched)"] = {k: max(previous[k], memory[k]) for k in memory}
        log(
            f"apply round {round_index + 1}/{ctx.runs}: {_workers(ctx)} applied {rate:,.0f} votes/s "
            f"({ctx.apply_events:,} in {seconds:.1f} s); {_cpu_note(ctx, cpu_us)}"
        )
        _reset(database_url)
        single = _helper(
            env,
            "per-vote",
            "--count",
            str(ctx.per_vote_events),
            "--poll-ids",
            ",".join(map(str, poll_ids)),
            "--seconds",
            str(ctx.duration),
        )
        per_vote.append(single["rate"])
        log(f"apply round {round_index + 1}/{ctx.runs}: one transaction per vote {single['rate']:,.0f} votes/s")
    rate, reference = median(batched), median(per_vote)
    ratio = paired_ratio(batched, per_vote)
    return [
        Row(
            "2 apply",
            f"votes/s applied by {_workers(ctx)} (Kafka -> PostgreSQL)",
            rate,
            "votes/s",
            "one transaction per vote (votes_apply x1)",
            reference,
            ratio,
            ">= 10x, >= 50,000/s",
            ratio >= 10 and rate >= 50_000,
            note=(
                f"{ctx.apply_events:,} events over {len(poll_ids)} polls x 4 options, batch settings "
                f"{' '.join(ctx.worker_args) or 'default (VOTE_BATCH_SIZE, VOTE_BATCH_WAIT_MS)'}; "
                f"counters {'equal' if consistent else 'DIFFER FROM'} the vote rows after every round"
            ),
            runs=batched,
        ),
    ]


def _run_against(ctx, env: dict[str, str], database_url: str, poll_ids: list[int]) -> list[Row]:
    """`--apply-against TREE`: rounds of this tree's worker and TREE's, alternated, in pairs.

    Both read the same topic into the same database on the same services, one after the
    other (the order swapped every round), so the ratio of each pair compares the two
    workers at the same moment of a shared machine.
    """
    other = Path(ctx.apply_against).resolve()
    rates: dict[str, list[float]] = {"this": [], "other": []}
    consistent = True
    for round_index in range(ctx.runs):
        order = [("this", REPO), ("other", other)]
        for label, repo in order if round_index % 2 == 0 else order[::-1]:
            _reset(database_url)
            rate, seconds, _, cpu_us = _time_worker(
                ctx,
                env,
                database_url,
                poll_ids,
                ctx.apply_events,
                group=f"bench-apply-{label}-{round_index}-{uuid.uuid4().hex[:6]}",
                name=f"apply-worker-{label}-{round_index}",
                repo=repo,
            )
            consistent &= sql(database_url, "SELECT count(*) FROM polls_vote")[0][0] == _counted(database_url, poll_ids)
            rates[label].append(rate)
            log(
                f"apply round {round_index + 1}/{ctx.runs}, {label} tree: {rate:,.0f} votes/s "
                f"({ctx.apply_events:,} in {seconds:.1f} s); {_cpu_note(ctx, cpu_us)}; load {os.getloadavg()[0]:.1f}"
            )
    return [
        Row(
            "2 apply",
            f"votes/s applied by {_workers(ctx)}, this tree",
            median(rates["this"]),
            "votes/s",
            f"the worker of {other}",
            median(rates["other"]),
            paired_ratio(rates["this"], rates["other"]),
            note=(
                f"pairs alternated: this {', '.join(f'{r:,.0f}' for r in rates['this'])}; "
                f"other {', '.join(f'{r:,.0f}' for r in rates['other'])}; counters "
                f"{'equal' if consistent else 'DIFFER FROM'} the vote rows after every round"
            ),
            runs=rates["this"],
        ),
    ]


# --- the Django-side helpers ---------------------------------------------------------------


def _django() -> None:
    import django

    django.setup()


def make_event(poll_id: int, option: int, serial: int):
    """A valid VoteEvent of the product's current shape (its fields are looked up by name)."""
    import dataclasses

    from django.utils import timezone

    from polls.kafka.events import VoteEvent

    known = {
        "vote_id": lambda: uuid.uuid4(),
        "poll_id": lambda: poll_id,
        "option": lambda: option,
        "options": lambda: (option,),
        "voter_key": lambda: f"bench:{serial}",
        "cast_at": lambda: timezone.now(),
        "dedupe_key": lambda: None,
    }
    if dataclasses.is_dataclass(VoteEvent):  # the shape of trees before 2026-11-26 (--apply-against)
        fields = [
            (f.name, f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
            for f in dataclasses.fields(VoteEvent)
        ]
    else:
        import msgspec

        fields = [(f.name, f.required) for f in msgspec.structs.fields(VoteEvent)]
    kwargs = {}
    for name, required in fields:
        if name in known:
            kwargs[name] = known[name]()
        elif required:
            raise RuntimeError(f"VoteEvent has a field the benchmark does not know: {name}")
    return VoteEvent(**kwargs)


def _cmd_setup(args) -> dict:
    from polls.domain.services import poll_create
    from polls.kafka.topics import ensure_topics

    ensure_topics()
    polls = [
        poll_create(question=f"Benchmark poll {n}?", options=["Red", "Blue", "Green", "Yellow"])
        for n in range(args.polls)
    ]
    return {"poll_ids": [poll.pk for poll in polls]}


def _choices(poll_ids: list[int], count: int):
    for serial in range(count):
        yield poll_ids[serial % len(poll_ids)], serial // len(poll_ids) % 4 + 1, serial


def _cmd_prefill(args) -> dict:
    from django.conf import settings
    from kafka import KafkaProducer

    from polls.kafka.topics import vote_topic

    poll_ids = [int(x) for x in args.poll_ids.split(",")]
    producer = KafkaProducer(
        bootstrap_servers=settings.KAFKA_BROKERS,
        acks="all",
        linger_ms=50,
        batch_size=512 * 1024,
        max_request_size=8 * 1024 * 1024,
        compression_type=None,
    )
    began = time.monotonic()
    topic = vote_topic()
    for poll_id, option, serial in _choices(poll_ids, args.count):
        event = make_event(poll_id, option, serial)
        producer.send(topic, key=event.key, value=event.to_bytes())
    producer.flush()
    producer.close()
    seconds = time.monotonic() - began
    return {"count": args.count, "seconds": seconds, "rate": args.count / seconds}


def _cmd_per_vote(args) -> dict:
    from django.db import connection

    from polls.domain.services import votes_apply

    poll_ids = [int(x) for x in args.poll_ids.split(",")]
    events = [make_event(p, o, s) for p, o, s in _choices(poll_ids, args.count)]
    votes_apply(events=[make_event(poll_ids[0], 1, -1)])  # connect and warm up outside the timing
    began = time.monotonic()
    done = 0
    for event in events:
        votes_apply(events=[event])
        done += 1
        if done % 50 == 0 and time.monotonic() - began > args.seconds:
            break
    seconds = time.monotonic() - began
    connection.close()
    return {"count": done, "seconds": seconds, "rate": done / seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.apply_rate")
    sub = parser.add_subparsers(dest="command", required=True)
    setup = sub.add_parser("setup")
    setup.add_argument("--polls", type=int, default=10)
    for name in ("prefill", "per-vote"):
        command = sub.add_parser(name)
        command.add_argument("--count", type=int, required=True)
        command.add_argument("--poll-ids", required=True)
        command.add_argument("--seconds", type=float, default=10.0, help="per-vote: stop after this long")
    args = parser.parse_args(argv)
    _django()
    handler = {"setup": _cmd_setup, "prefill": _cmd_prefill, "per-vote": _cmd_per_vote}[args.command]
    print(json.dumps(handler(args)), flush=True)


if __name__ == "__main__":
    main()
