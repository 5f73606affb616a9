"""A steady stream of concurrent votes with a ledger, and the books it is checked against.

    stream = VoteStream(port=web.port, polls={poll_id: 4}, rate=120, threads=12)
    with stream:
        ...                      # inject a fault while votes keep coming
    report = settle(outcomes=stream.outcomes(), poll_ids=[poll_id], brokers=..., topic=...)
    report.assert_exact()        # 0 lost, 0 duplicated, 0 counted although refused

Every request carries its own Idempotency-Key (a fresh uuid), so every vote row and every
Kafka event names the one request it came from (the ballot id is derived from the poll
and the key: polls.domain.services.vote_cast): the books are kept per vote, not only per
option. A request whose answer never came (the web process died with it in flight, or
the client gave up) is "unknown" and may rightly have been counted or not; the
reconciliation tells which, instead of allowing a margin. A ballot is one key: the
vote and any retries of it sent with the same key (resend), as the 503 asks clients to.

Requests go to 127.0.0.1, each from its own loopback source address (127.1.0.1,
127.1.0.2, ...: all of 127.0.0.0/8 is the loopback interface), so that the per-address
rate limit, meant for venues, does not throttle a load test that runs from one host.

Nothing here is mocked or sampled: the ledger holds every request, the books are every
vote row and every message in the topic. Threads and http.client only (what urllib uses
underneath; urllib cannot choose the source address).
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from testsupport.kafka import TopicEvent, topic_events

ACCEPTED = "accepted"  # 204: the API says the vote is durable; it must be counted exactly once
REFUSED = "refused"  # 503: "not recorded, retry": never counted, unless a retry with its key is accepted
REJECTED = "rejected"  # any other HTTP answer: nothing may be counted either
UNSENT = "unsent"  # connection refused: the server never read the request
UNKNOWN = "unknown"  # sent, but no answer (reset, timeout): counted at most once

_REGRESSION_HINT = (
    "vote rows that match no request of the stream: does the API still derive the ballot "
    "id from the Idempotency-Key header (see expected_vote_id)?"
)


# --- identities --------------------------------------------------------------------


def source_address(seq: int) -> str:
    """The loopback address request number `seq` is sent from: 127.1.0.1 onwards, unique.

    Avoids 127.0.0.0/16 (127.0.0.1 is everyone else's) and the .0 and .255 hosts.
    About 16 million requests before it wraps, far beyond any run here.
    """
    host = seq % 254 + 1
    rest = seq // 254
    return f"127.{1 + (rest // 256) % 255}.{rest % 256}.{host}"


def expected_vote_id(outcome: Outcome) -> uuid.UUID:
    """The ballot id the API gives this vote: from its Idempotency-Key, scoped to the
    address it came from, as the client sends no voter token (polls.domain.idempotency)."""
    from polls.domain.idempotency import ballot_id
    from polls.domain.voters import client_address_key

    scope = f"ip:{client_address_key(outcome.address)}"
    return ballot_id(poll_id=outcome.poll_id, scope=scope, idempotency_key=outcome.key)


# --- the stream --------------------------------------------------------------------


@dataclass
class Outcome:
    """One vote request and how it ended."""

    seq: int
    address: str
    key: str  # the Idempotency-Key sent
    poll_id: int
    option: int
    started: float  # time.monotonic()
    ended: float
    kind: str
    status: int | None = None
    retry_after: str | None = None
    content_type: str | None = None
    body: bytes = b""
    error: str | None = None

    @property
    def latency(self) -> float:
        return self.ended - self.started


class VoteStream:
    """Votes at a steady rate from `threads` threads until stopped, or bounded by count and time.

    Each request is one new connection from its own source address, JSON body
    {"poll_id": p, "option": o}. The pacing has no memory of debt: after an outage,
    when requests took seconds, it does not burst to catch up.
    """

    def __init__(
        self,
        *,
        port: int,
        polls: Mapping[int, int],
        rate: float = 100.0,
        threads: int = 12,
        max_votes: int = 100_000,
        max_seconds: float = 600.0,
        timeout: float = 10.0,
        seed: int | None = None,
        first_seq: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        if host != "127.0.0.1":
            raise ValueError("the fault tests talk to 127.0.0.1 only")
        self.host, self.port = host, port
        self.polls = dict(polls)
        self.rate = rate
        self.threads = threads
        self.timeout = timeout
        self.max_votes = max_votes
        self.max_seconds = max_seconds
        self.seed = random.randrange(1 << 30) if seed is None else seed
        self._next_seq = first_seq
        self._last_seq = first_seq + max_votes
        self._lock = threading.Lock()
        self._outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._next_slot = 0.0
        self._deadline = 0.0
        self.started_at: float | None = None
        self.stopped_at: float | None = None

    # -- control ------------------------------------------------------------------------

    def start(self) -> VoteStream:
        now = time.monotonic()
        self.started_at = now
        self._next_slot = now
        self._deadline = now + self.max_seconds
        for index in range(self.threads):
            thread = threading.Thread(target=self._run, args=(index,), name=f"voter-{index}", daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def stop(self, timeout: float | None = None) -> list[Outcome]:
        """Stop sending; wait for the requests in flight to end. Returns every outcome."""
        self._stop.set()
        limit = (self.timeout + 5) if timeout is None else timeout
        deadline = time.monotonic() + limit
        for thread in self._workers:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._workers if t.is_alive()]
        if alive:
            raise AssertionError(f"vote threads still busy after {limit:.0f} s: {alive}")
        self.stopped_at = time.monotonic()
        return self.outcomes()

    def join(self, timeout: float = 60) -> list[Outcome]:
        """Wait until the stream ends by itself (max_votes or max_seconds reached)."""
        deadline = time.monotonic() + timeout
        for thread in self._workers:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self.running:
            raise AssertionError(f"the vote stream did not end within {timeout:.0f} s")
        self.stopped_at = time.monotonic()
        return self.outcomes()

    def __enter__(self) -> VoteStream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        if not self._stop.is_set():
            self.stop()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._workers)

    # -- what happened ------------------------------------------------------------------

    def outcomes(self) -> list[Outcome]:
        with self._lock:
            return sorted(self._outcomes, key=lambda o: o.seq)

    def count(self, kind: str | None = None, *, since: float | None = None) -> int:
        with self._lock:
            return sum(
                1 for o in self._outcomes if (kind is None or o.kind == kind) and (since is None or o.started >= since)
            )

    def wait_for(self, kind: str, n: int, *, since: float | None = None, timeout: float = 60) -> None:
        """Wait until at least n outcomes of `kind` (started after `since`) are in."""
        deadline = time.monotonic() + timeout
        while self.count(kind, since=since) < n:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"only {self.count(kind, since=since)} of {n} {kind} votes after {timeout:.0f} s; "
                    f"so far: {summarize(self.outcomes())}"
                )
            if not self.running:
                raise AssertionError(f"the vote stream ended early: {summarize(self.outcomes())}")
            time.sleep(0.05)

    def ledger(self) -> Counter[tuple[int, int]]:
        """Votes answered 204, per (poll, option)."""
        return Counter((o.poll_id, o.option) for o in self.outcomes() if o.kind == ACCEPTED)

    # -- the threads --------------------------------------------------------------------

    def _claim(self) -> tuple[int, float] | None:
        with self._lock:
            if self._next_seq >= self._last_seq:
                return None
            seq = self._next_seq
            self._next_seq += 1
            slot = max(self._next_slot, time.monotonic())
            self._next_slot = slot + 1.0 / self.rate
            return seq, slot

    def _run(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        poll_ids = sorted(self.polls)
        while not self._stop.is_set():
            claimed = self._claim()
            if claimed is None:
                return
            seq, slot = claimed
            delay = slot - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            if time.monotonic() > self._deadline:
                return
            poll_id = rng.choice(poll_ids)
            option = rng.randint(1, self.polls[poll_id])
            outcome = self._vote(seq, poll_id, option)
            with self._lock:
                self._outcomes.append(outcome)

    def _vote(self, seq: int, poll_id: int, option: int) -> Outcome:
        return send_vote(
            port=self.port, seq=seq, poll_id=poll_id, option=option, key=uuid.uuid4().hex, timeout=self.timeout
        )


def send_vote(
    *, port: int, seq: int, poll_id: int, option: int, key: str, timeout: float, address: str | None = None
) -> Outcome:
    """POST one vote to 127.0.0.1:port from `address` (source_address(seq) by default), with this Idempotency-Key."""
    address = address or source_address(seq)
    outcome = Outcome(
        seq=seq,
        address=address,
        key=key,
        poll_id=poll_id,
        option=option,
        started=time.monotonic(),
        ended=0.0,
        kind=UNKNOWN,
    )
    body = json.dumps({"poll_id": poll_id, "option": option}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(address, 0))
    try:
        try:
            conn.connect()
        except OSError as exc:
            # Nothing was sent: the server cannot have acted on it.
            outcome.kind, outcome.error = UNSENT, repr(exc)
            return outcome
        try:
            conn.request(
                "POST",
                f"/polls/{poll_id}/vote",
                body=body,
                headers={"Content-Type": "application/json", "Connection": "close", "Idempotency-Key": key},
            )
            response = conn.getresponse()
            outcome.body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            outcome.kind, outcome.error = UNKNOWN, repr(exc)
            return outcome
        outcome.status = response.status
        outcome.retry_after = response.getheader("Retry-After")
        outcome.content_type = response.getheader("Content-Type")
        outcome.kind = {204: ACCEPTED, 503: REFUSED}.get(response.status, REJECTED)
        return outcome
    finally:
        outcome.ended = time.monotonic()
        conn.close()


def resend(
    *,
    port: int,
    outcomes: Sequence[Outcome],
    first_seq: int,
    attempts: int = 5,
    threads: int = 8,
    timeout: float = 15.0,
    max_seconds: float = 180.0,
) -> list[Outcome]:
    """What the API tells a client to do after a 503: send the same vote again, same key.

    Each vote is sent again (from its first address: a client without a voter token has
    its keys scoped to its address) until it is answered 204, at
    most `attempts` times, waiting its Retry-After between tries, and no new attempt
    starts after `max_seconds`. Returns every attempt.
    """
    from concurrent.futures import ThreadPoolExecutor

    seqs = iter(range(first_seq, first_seq + len(outcomes) * attempts))
    lock = threading.Lock()
    deadline = time.monotonic() + max_seconds

    def again(original: Outcome) -> list[Outcome]:
        tries: list[Outcome] = []
        for _ in range(attempts):
            if time.monotonic() > deadline:
                break
            with lock:
                seq = next(seqs)
            result = send_vote(
                port=port,
                seq=seq,
                poll_id=original.poll_id,
                option=original.option,
                key=original.key,
                timeout=timeout,
                address=original.address,
            )
            tries.append(result)
            if result.kind == ACCEPTED:
                break
            time.sleep(float(result.retry_after or 1))
        return tries

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return [attempt for tries in pool.map(again, outcomes) for attempt in tries]


def summarize(outcomes: Iterable[Outcome]) -> dict[str, Any]:
    """Counts per kind, and per status for the HTTP answers other than 204."""
    outcomes = list(outcomes)
    kinds = Counter(o.kind for o in outcomes)
    statuses = Counter(o.status for o in outcomes if o.status not in (None, 204))
    errors = Counter((o.error or "").split("(")[0] for o in outcomes if o.error)
    latencies = sorted(o.latency for o in outcomes if o.kind == ACCEPTED)
    span = (max(o.ended for o in outcomes) - min(o.started for o in outcomes)) if outcomes else 0.0
    return {
        "requests": len(outcomes),
        **{kind: kinds.get(kind, 0) for kind in (ACCEPTED, REFUSED, REJECTED, UNSENT, UNKNOWN)},
        "statuses": dict(statuses),
        "errors": dict(errors),
        "per_second": round(len(outcomes) / span, 1) if span else 0.0,
        "p50_ms": round(1000 * latencies[len(latencies) // 2]) if latencies else None,
        "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)]) if latencies else None,
    }


# --- votes published straight to Kafka ---------------------------------------------


@dataclass(frozen=True)
class DirectVote:
    vote_id: uuid.UUID
    poll_id: int
    option: int
    voter_key: str


class DirectPublisher:
    """Publishes vote events in the wire format straight to the topic, acks=all.

    For faults that also take the web process down (PostgreSQL: the API validates a vote
    against the database), so the worker still has votes to apply while it waits. Each
    event published is acknowledged by the broker before it enters the ledger.
    """

    def __init__(self, *, brokers: Sequence[str] | str, topic: str) -> None:
        from kafka import KafkaProducer

        self.topic = topic
        self.published: list[DirectVote] = []
        self._producer = KafkaProducer(
            bootstrap_servers=brokers,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            client_id="fault-test-direct",
        )

    def publish(self, *, polls: Mapping[int, int], n: int, rng: random.Random | None = None) -> list[DirectVote]:
        rng = rng or random.Random()
        batch: list[tuple[DirectVote, Any]] = []
        for _ in range(n):
            poll_id = rng.choice(sorted(polls))
            vote = DirectVote(
                vote_id=uuid.uuid4(),
                poll_id=poll_id,
                option=rng.randint(1, polls[poll_id]),
                voter_key=f"fault-direct:{len(self.published) + len(batch)}",
            )
            value = json.dumps(
                {
                    "vote_id": str(vote.vote_id),
                    "poll_id": vote.poll_id,
                    "option": vote.option,
                    "voter_key": vote.voter_key,
                    "cast_at": datetime.now(UTC).isoformat(),
                },
                separators=(",", ":"),
            ).encode()
            batch.append((vote, self._producer.send(self.topic, key=str(poll_id).encode(), value=value)))
        for vote, future in batch:
            future.get(timeout=30)  # acknowledged, or the test fails here
            self.published.append(vote)
        return [vote for vote, _ in batch]

    def close(self) -> None:
        self._producer.close(timeout=5)


# --- the books -----------------------------------------------------------------------


@dataclass
class Reconciliation:
    """Every request of the ledger set against the vote rows, the counters and the topic."""

    figures: dict[str, Any]
    problems: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not self.problems

    def assert_exact(self) -> None:
        if self.problems:
            shown = "\n  ".join(self.problems[:30])
            more = f"\n  ... and {len(self.problems) - 30} more" if len(self.problems) > 30 else ""
            raise AssertionError(f"the books do not balance: {self.figures}\n  {shown}{more}")

    def line(self) -> str:
        f = self.figures
        return (
            f"{f['requests']} requests ({f['ballots']} ballots, {f['retried']} retries): "
            f"{f['accepted']} accepted (204), {f['refused']} refused (503), "
            f"{f['rejected']} other answers {f['statuses']}, {f['unsent']} not sent, {f['unknown']} "
            f"unanswered ({f['unknown_counted']} of them counted); direct events {f['direct']}; "
            f"lost {f['lost']}, duplicated {f['duplicated']}, counted though refused {f['phantom']}; "
            f"topic {f['topic_events']} events ({f['topic_duplicates']} repeated)"
        )


def reconcile(
    *,
    outcomes: Sequence[Outcome],
    poll_ids: Iterable[int],
    direct: Sequence[DirectVote] = (),
    events: Sequence[TopicEvent] | None = None,
) -> Reconciliation:
    """Compare the ledger with the database (and the topic, if given); list every difference.

    A ballot is one Idempotency-Key: a vote and the retries a client sent with the same
    key. A ballot answered 204 (at any attempt) must have its row, of its poll and option;
    one never accepted (503, any other answer, never sent) must have none, nor be in the
    topic; one with an unanswered attempt may have one. Every option counter must equal the
    ledger's votes for it (204s, plus the unanswered ones that were counted, plus direct
    events), and
    polls.domain.services.counters_verify() must find no counter that differs from its rows.
    (Vote ids are unique in the table, so a vote counted twice shows as a counter above
    its rows and above the ledger.)
    """
    from polls.domain.services import counters_verify
    from polls.models import Option, Vote

    poll_ids = sorted(set(poll_ids))
    rows = {
        str(vote_id): (poll_id, position)
        for vote_id, poll_id, position in Vote.objects.filter(poll_id__in=poll_ids).values_list(
            "vote_id", "poll_id", "option__position"
        )
    }
    counters = {
        (poll_id, position): votes
        for poll_id, position, votes in Option.objects.filter(poll_id__in=poll_ids).values_list(
            "poll_id", "position", "votes"
        )
    }

    problems: list[str] = []
    expected: Counter[tuple[int, int]] = Counter()
    figures: dict[str, Any] = summarize(outcomes)
    lost = phantom = wrong = unknown_counted = 0
    # A ballot is one Idempotency-Key: the first attempt and any retries of it.
    attempts_of: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        attempts_of[str(expected_vote_id(o))].append(o)
    for vote_id, attempts in attempts_of.items():
        o = attempts[0]
        kinds = {a.kind for a in attempts}
        row = rows.get(vote_id)
        if row is not None and row != (o.poll_id, o.option):
            wrong += 1
            problems.append(
                f"vote #{o.seq} for poll {o.poll_id} option {o.option} was counted as poll {row[0]} option {row[1]}"
            )
        if ACCEPTED in kinds:
            expected[(o.poll_id, o.option)] += 1
            if row is None:
                lost += 1
                problems.append(
                    f"vote #{o.seq} ({vote_id}) answered 204 (poll {o.poll_id} option "
                    f"{o.option}, Idempotency-Key {o.key}) is not counted"
                )
        elif UNKNOWN in kinds:
            if row is not None:
                unknown_counted += 1
                expected[(o.poll_id, o.option)] += 1
        elif row is not None:
            phantom += 1
            problems.append(
                f"vote #{o.seq} ({vote_id}) answered {o.status or o.kind} after {o.latency:.2f} s "
                f"({o.body[:120]!r}) was counted anyway"
            )

    direct_lost = 0
    known = set(attempts_of)
    for vote in direct:
        known.add(str(vote.vote_id))
        expected[(vote.poll_id, vote.option)] += 1
        row = rows.get(str(vote.vote_id))
        if row is None:
            direct_lost += 1
            problems.append(f"event {vote.vote_id} published straight to Kafka is not counted")
        elif row != (vote.poll_id, vote.option):
            problems.append(f"event {vote.vote_id} counted for the wrong option: {row}")

    strangers = sorted(set(rows) - known)
    if strangers:
        problems.append(f"{len(strangers)} {_REGRESSION_HINT}; e.g. {strangers[:3]}")

    over = 0
    for key in sorted(set(counters) | set(expected)):
        counter, ledger = counters.get(key, 0), expected.get(key, 0)
        if counter != ledger:
            over += max(0, counter - ledger)
            problems.append(f"poll {key[0]} option {key[1]}: counter {counter}, ledger {ledger}")
    mismatches = counters_verify()
    if mismatches:
        problems.append(f"counters differ from their vote rows: {mismatches}")

    topic_figures: dict[str, Any] = {"topic_events": None, "topic_duplicates": None}
    if events is not None:
        in_topic = Counter(e.vote_id for e in events if e.vote_id is not None)
        topic_figures = {
            "topic_events": len(events),
            "topic_duplicates": sum(n - 1 for n in in_topic.values() if n > 1),
            "topic_malformed": sum(1 for e in events if e.vote_id is None),
        }
        for e in events:
            attempts = attempts_of.get(e.vote_id or "", [])
            if attempts and not {a.kind for a in attempts} & {ACCEPTED, UNKNOWN}:
                o = attempts[0]
                problems.append(
                    f"vote #{o.seq} answered {o.status or o.kind} after {o.latency:.2f} s is in "
                    f"the topic anyway ({e.partition}@{e.offset})"
                )
        missing = set(in_topic) - set(rows)
        if missing:
            problems.append(f"{len(missing)} events in the topic have no vote row, e.g. {sorted(missing)[:3]}")

    figures.update(
        ballots=len(attempts_of),
        retried=len(outcomes) - len(attempts_of),
        lost=lost,
        duplicated=over,
        phantom=phantom,
        wrong_option=wrong,
        unknown_counted=unknown_counted,
        direct=len(direct),
        direct_lost=direct_lost,
        rows=len(rows),
        strangers=len(strangers),
        counters=sum(counters.values()),
        ledger=sum(expected.values()),
        **topic_figures,
    )
    return Reconciliation(figures=figures, problems=problems)


def settle(
    *,
    outcomes: Sequence[Outcome],
    poll_ids: Iterable[int],
    brokers: Sequence[str] | str,
    topic: str,
    direct: Sequence[DirectVote] = (),
    timeout: float = 120,
    other_polls: Iterable[int] = (),
) -> Reconciliation:
    """Wait until the workers applied every event in the topic, then reconcile.

    Events of `other_polls` (votes a test sent outside the ledger) are left out.

    Caught up means: every vote_id in the topic has its row (the topic, not the group's
    committed offsets: a commit lost in a rebalance leaves those behind until the next
    batch, although the votes are applied). Then, after a pause for anything that would
    still count twice, the books are compared.
    """
    from django.db import connection
    from django.db.utils import InterfaceError, OperationalError

    from polls.models import Vote

    poll_ids = sorted(set(poll_ids))
    others = set(other_polls)

    def events() -> list[TopicEvent]:
        return [e for e in topic_events(brokers=brokers, topic=topic) if e.poll_id not in others]

    deadline = time.monotonic() + timeout
    wanted = {e.vote_id for e in events() if e.vote_id is not None}
    while True:
        try:
            have = {str(v) for v in Vote.objects.filter(poll_id__in=poll_ids).values_list("vote_id", flat=True)}
        except (OperationalError, InterfaceError):
            connection.close()
            have = set()
        if not wanted - have or time.monotonic() > deadline:
            break  # on time out, reconcile reports what is missing
        time.sleep(0.25)
    time.sleep(2.0)  # a late redelivery that counted twice would show now
    return reconcile(outcomes=outcomes, poll_ids=poll_ids, direct=direct, events=events())


def batches_in_log(text: str) -> dict[str, int]:
    """Sum of the worker's "batch of N: A applied, D duplicates, X dead-lettered" lines."""
    import re

    totals = Counter()
    for match in re.finditer(r"batch of (\d+): (\d+) applied, (\d+) duplicates, (\d+) dead-lettered", text):
        n, applied, dups, dead = map(int, match.groups())
        totals.update(batches=1, messages=n, applied=applied, duplicates=dups, dead_lettered=dead)
    return dict(totals)


# --- setting up a run ---------------------------------------------------------------

# The test plugin turns the rate limits off for the whole suite (load tests vote from
# 127.0.0.1); the fault tests run the web process with the production defaults instead,
# which their traffic (one source address and one voter per vote) never reaches.
_TEST_ONLY_SETTINGS = (
    "RATE_LIMIT_VOTES_PER_ADDRESS",
    "RATE_LIMIT_NEW_VOTERS_PER_ADDRESS",
    "RATE_LIMIT_VOTES_PER_VOTER",
    "RATE_LIMIT_POLLS_PER_ADDRESS",
)


def production_env(env: Mapping[str, str], **overrides: str) -> dict[str, str]:
    """A process environment without the test suite's relaxations, plus `overrides`."""
    return {**{k: v for k, v in env.items() if k not in _TEST_ONLY_SETTINGS}, **overrides}


SEED_OPTIONS = ("Red", "Blue", "Green", "Yellow")


def create_poll(base_url: str, *, question: str = "Which colour?", options: Sequence[str] = SEED_OPTIONS) -> int:
    """A poll created through the API (seed body); returns its id."""
    body: dict[str, Any] = {"question": question}
    body.update({f"option{n}": text for n, text in enumerate(options, start=1)})
    # From an address of its own, like the votes: a run creates dozens of polls, more than
    # the per-address limit on poll creation allows one client in a minute.
    source = f"127.0.{random.randint(2, 254)}.{random.randint(1, 254)}"
    conn = http.client.HTTPConnection(
        "127.0.0.1", int(base_url.rsplit(":", 1)[1]), timeout=30, source_address=(source, 0)
    )
    try:
        conn.request("POST", "/polls", body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    if response.status != 201:
        raise AssertionError(f"creating a poll answered {response.status}: {data[:300]!r}")
    return int(json.loads(data)["id"])


def partition_of(poll_id: int, partitions: int) -> int:
    """The partition the producer's default partitioner puts a poll's votes in (key = poll id)."""
    from kafka.partitioner.default import murmur2

    return (murmur2(str(poll_id).encode()) & 0x7FFFFFFF) % partitions


def polls_on_every_partition(base_url: str, *, partitions: int, at_least: int = 0, limit: int = 200) -> dict[int, int]:
    """Create polls until every partition of the vote topic carries votes of one of them.

    So that whichever partitions a worker is assigned in a rebalance, it has votes to apply.
    Returns {poll_id: number of options}, one poll per partition (and at least `at_least`).
    """
    chosen: dict[int, int] = {}
    covered: set[int] = set()
    for n in range(limit):
        poll_id = create_poll(base_url, question=f"Fault poll {n}")
        partition = partition_of(poll_id, partitions)
        if partition not in covered or len(chosen) < at_least:
            covered.add(partition)
            chosen[poll_id] = len(SEED_OPTIONS)
        if len(covered) == partitions and len(chosen) >= at_least:
            return chosen
    raise AssertionError(f"{limit} polls cover only partitions {sorted(covered)} of {partitions}")
