"""Soak: votes stream for N minutes through real processes while faults come one after another.

    .venv/bin/python -m bench.soak --minutes 10
    .venv/bin/python -m bench.soak --minutes 30 --faults worker,broker,postgres --fault-every 30

It starts its own PostgreSQL, Redis and Kafka (devservices, free ports, a temporary
directory), a web server process and vote workers, streams votes at a steady rate with
a ledger of every request (testsupport/ledger.py), and every --fault-every seconds
injects the next fault of a shuffled cycle:

    worker     SIGKILL one worker, start another at once
    rebalance  start an extra worker in the group, then SIGKILL one of the others
    broker     SIGKILL Kafka, keep it down a few seconds, start it again
    postgres   stop (or SIGKILL) PostgreSQL, publish votes straight to Kafka meanwhile, start it
    redis      stop Redis for a few seconds, start it again
    web        SIGKILL the web process, start it again on the same port

At the end it waits until the workers applied everything in the topic and checks every
request against the vote rows, the counters and the topic, then prints the figures:
votes accepted, 503s, other answers, lost, duplicated, counted although refused. The
exit status is 1 if the books do not balance. Not a test: nothing here is asserted
beyond that exit status; the CI fault tests are in tests/faults/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid

from testsupport.processes import REPO, WebServer, WorkerProcess
from testsupport.services import ServiceStack

FAULTS = ("worker", "rebalance", "broker", "postgres", "redis", "web")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="how long votes stream (default 5)")
    parser.add_argument("--rate", type=float, default=100.0, help="votes per second asked for (default 100)")
    parser.add_argument("--threads", type=int, default=16, help="concurrent voters (default 16)")
    parser.add_argument("--workers", type=int, default=2, help="vote workers in the group (default 2)")
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, of {','.join(FAULTS)}")
    parser.add_argument("--fault-every", type=float, default=20.0, help="seconds between faults (default 20)")
    parser.add_argument("--publish-timeout", type=float, default=2.0, help="VOTE_PUBLISH_TIMEOUT of the web")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--no-retry",
        action="store_true",
        help="do not send votes answered 503 again (with their Idempotency-Key) at the end",
    )
    parser.add_argument("--keep", action="store_true", help="keep the services' directory (logs) afterwards")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object too")
    args = parser.parse_args()
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = set(faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults {sorted(unknown)}; choose from {', '.join(FAULTS)}")
    seed = random.randrange(1 << 30) if args.seed is None else args.seed
    # SIGTERM (a CI timeout) ends the run through the finally below, which stops the
    # processes and services it started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    rng = random.Random(seed)

    stack = ServiceStack.start_all(prefix="polling-soak-")
    postgres, redis, kafka, root = stack.postgres, stack.redis, stack.kafka, stack.root
    processes = []
    started = time.monotonic()
    try:
        topic = f"soak-{uuid.uuid4().hex[:8]}"
        env = {
            **os.environ,
            "DATABASE_URL": postgres.url,
            "REDIS_URL": redis.url,
            "KAFKA_BROKERS": kafka.bootstrap,
            "KAFKA_TOPIC": topic,
            "KAFKA_CONSUMER_GROUP": f"{topic}-workers",
            "SECRET_KEY": os.environ.get("SECRET_KEY") or f"soak-{uuid.uuid4().hex}{uuid.uuid4().hex}",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DEBUG": "0",
            "VOTE_PUBLISH_TIMEOUT": str(args.publish_timeout),
            "PYTHONUNBUFFERED": "1",
            "DJANGO_SETTINGS_MODULE": "polling.settings",
        }
        os.environ.update(
            {
                k: env[k]
                for k in (
                    "DATABASE_URL",
                    "REDIS_URL",
                    "KAFKA_BROKERS",
                    "KAFKA_TOPIC",
                    "KAFKA_CONSUMER_GROUP",
                    "SECRET_KEY",
                    "ALLOWED_HOSTS",
                    "DEBUG",
                    "DJANGO_SETTINGS_MODULE",
                )
            }
        )
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=REPO, env=env, check=True)
        import django

        django.setup()
        from django.conf import settings
        from django.db import connection

        from polls.kafka.topics import ensure_topics
        from testsupport.kafka import topic_events
        from testsupport.ledger import (
            ACCEPTED,
            REFUSED,
            DirectPublisher,
            VoteStream,
            batches_in_log,
            expected_vote_id,
            polls_on_every_partition,
            resend,
            settle,
            summarize,
        )

        ensure_topics()
        logs = root / "logs"
        logs.mkdir()
        group = env["KAFKA_CONSUMER_GROUP"]
        serial = iter(range(1_000_000))

        def new_worker() -> WorkerProcess:
            worker = WorkerProcess(env=env, log_dir=logs, group=group, name=f"worker-{next(serial)}")
            worker.start(wait=False)
            processes.append(worker)
            return worker

        web = WebServer(env=env, log_dir=logs)
        web.start()
        processes.append(web)
        workers = [new_worker() for _ in range(args.workers)]
        polls = polls_on_every_partition(web.url, partitions=settings.KAFKA_TOPIC_PARTITIONS, at_least=8)
        publisher = DirectPublisher(brokers=settings.KAFKA_BROKERS, topic=topic)
        journal: list[str] = []

        def note(what: str) -> None:
            line = f"{time.monotonic() - started:7.1f} s  {what}"
            journal.append(line)
            print(line, flush=True)

        note(
            f"seed {seed}; services under {root}; {len(polls)} polls; {args.workers} workers; "
            f"{args.rate:g} votes/s asked from {args.threads} threads for {args.minutes:g} min"
        )
        cycle: list[str] = []
        duration = args.minutes * 60
        stream = VoteStream(
            port=web.port,
            polls=polls,
            rate=args.rate,
            threads=args.threads,
            max_votes=10_000_000,
            max_seconds=duration + 600,
            timeout=15,
            seed=seed,
        )
        stream.start()
        end = time.monotonic() + duration
        kinds = ("accepted", "refused", "rejected", "unsent", "unknown")

        def delta(a: dict, b: dict) -> dict:
            return {k: b[k] - a[k] for k in kinds if b[k] - a[k]}

        last = summarize(stream.outcomes())
        while time.monotonic() + args.fault_every < end:
            time.sleep(args.fault_every)
            if not cycle:
                cycle = list(faults)
                rng.shuffle(cycle)
            fault = cycle.pop()
            began = time.monotonic()
            before = summarize(stream.outcomes())
            note(f"quiet     {delta(last, before)}")
            if fault == "worker":
                victim = rng.choice(workers)
                victim.kill()
                replacement = new_worker()
                workers[workers.index(victim)] = replacement
                detail = f"killed {victim.name}, started {replacement.name}"
            elif fault == "rebalance":
                extra = new_worker()
                time.sleep(rng.uniform(3, 8))
                victim = rng.choice(workers)
                victim.kill()
                workers[workers.index(victim)] = extra
                detail = f"{extra.name} joined, then {victim.name} killed"
            elif fault == "broker":
                kafka.kill()
                time.sleep(rng.uniform(2, 6))
                kafka.start()
                detail = "Kafka SIGKILLed and started"
            elif fault == "postgres":
                how = rng.choice(["stop", "kill"])
                (postgres.stop if how == "stop" else postgres.kill)()
                connection.close()
                publisher.publish(polls=polls, n=100, rng=rng)
                time.sleep(rng.uniform(2, 6))
                postgres.start()
                connection.close()
                detail = f"PostgreSQL {how}, 100 votes published straight to Kafka meanwhile, started"
            elif fault == "redis":
                redis.stop()
                time.sleep(rng.uniform(3, 8))
                redis.start()
                detail = "Redis stopped and started"
            else:
                web.kill()
                web = WebServer(env=env, log_dir=logs, port=web.port)
                web.start()
                processes.append(web)
                detail = "web SIGKILLed and started again"
            last = summarize(stream.outcomes())
            note(f"{fault:9s} {detail} in {time.monotonic() - began:.1f} s; meanwhile {delta(before, last)}")
        time.sleep(max(0.0, end - time.monotonic()))
        stream.stop()
        note(f"stream stopped: {summarize(stream.outcomes())}")

        outcomes = stream.outcomes()
        in_topic = {e.vote_id for e in topic_events(brokers=settings.KAFKA_BROKERS, topic=topic)}
        refused = [o for o in outcomes if o.kind == REFUSED]
        refused_written = [o for o in refused if str(expected_vote_id(o)) in in_topic]
        retries = []
        if refused and not args.no_retry:
            # What a 503 asks of a client: the same vote again, with the same key.
            retries = resend(port=web.port, outcomes=refused, first_seq=15_000_000)
            note(f"refused votes sent again with their keys: {summarize(retries)}")
        report = settle(
            outcomes=outcomes + retries,
            poll_ids=polls,
            brokers=settings.KAFKA_BROKERS,
            topic=topic,
            direct=publisher.published,
            timeout=600,
        )
        publisher.close()
        batches = batches_in_log("".join(p.log() for p in processes if isinstance(p, WorkerProcess)))
        f, sf = report.figures, summarize(outcomes)
        retried_ok = sum(1 for o in retries if o.kind == ACCEPTED)
        print()
        print(f"soak of {args.minutes:g} min, seed {seed}, faults {', '.join(faults)} every {args.fault_every:g} s")
        print(
            f"  votes sent          {sf['requests']}  ({sf['per_second']}/s; "
            f"p50 {sf['p50_ms']} ms, p99 {sf['p99_ms']} ms)"
        )
        print(f"  accepted (204)      {sf['accepted']}")
        print(
            f"  refused (503)       {sf['refused']}, of which {len(refused_written)} were written to Kafka all the same"
        )
        print(f"  other answers       {sf['rejected']} {sf['statuses']}")
        print(f"  never sent          {sf['unsent']} (connection refused: web down)")
        print(f"  no answer           {sf['unknown']} (in flight at a crash), {f['unknown_counted']} of them counted")
        print(
            f"  503s retried        {len(retries)} attempts (same Idempotency-Key) for {len(refused)} votes: "
            f"{retried_ok} accepted"
        )
        print(f"  direct to Kafka     {f['direct']}, lost {f['direct_lost']}")
        print(f"  lost                {f['lost']}")
        print(f"  duplicated          {f['duplicated']}")
        print(f"  counted, though refused  {f['phantom']}")
        print(f"  counters            {f['counters']} = ledger {f['ledger']}: {f['counters'] == f['ledger']}")
        print(f"  topic               {f['topic_events']} events, {f['topic_duplicates']} repeated")
        print(f"  worker batches      {batches}")
        print(f"  verdict             {'EXACT' if report.exact else 'BOOKS DO NOT BALANCE'}")
        for problem in report.problems[:20]:
            print(f"    {problem}")
        if args.json:
            print(
                json.dumps(
                    {
                        "seed": seed,
                        "minutes": args.minutes,
                        "faults": faults,
                        **f,
                        "refused_but_written": len(refused_written),
                        "exact": report.exact,
                        "worker_batches": batches,
                        "journal": journal,
                    }
                )
            )
        return 0 if report.exact else 1
    finally:
        for process in processes:
            process.kill()
        stack.stop_all(keep=args.keep)
        if args.keep:
            print(f"services and logs kept under {root}")


if __name__ == "__main__":
    sys.exit(main())
