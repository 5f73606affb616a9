"""Brokers of a three-node Kafka cluster SIGKILLed while votes stream in.

The vote topic has three replicas and min.insync.replicas 2. First the leader of the
hot poll's partition (found with an admin client) dies: another replica takes over and
voting goes on. Then the new leader dies too, leaving one broker: below the minimum of
in-sync replicas (and without a controller quorum) a vote cannot become durable, so it
is answered 503 and never 204. Both come back; voting answers 204 again. Throughout,
the per-vote ledger must balance: every 204 counted once, nothing counted twice, no
refused vote counted unless its retry (same Idempotency-Key, as the 503 asks) was
accepted. The longest run of 503s and the p99 while the leader fails over are reported.
"""

import time

import pytest
from django.conf import settings
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from tests.faults.stack import web_and_worker
from testsupport.kafka import topic_events
from testsupport.ledger import (
    ACCEPTED,
    REFUSED,
    Outcome,
    VoteStream,
    expected_vote_id,
    partition_of,
    resend,
    settle,
    summarize,
)

pytestmark = pytest.mark.django_db(transaction=True)


def longest_refused_run(outcomes: list[Outcome]) -> tuple[int, float]:
    """(votes, seconds from the first one's start to the last one's answer) of the longest
    run of consecutive 503s, in the order the votes were sent."""
    best: tuple[int, float] = (0, 0.0)
    run: list[Outcome] = []
    for outcome in sorted(outcomes, key=lambda o: o.started):
        if outcome.kind == REFUSED:
            run.append(outcome)
            best = max(best, (len(run), run[-1].ended - run[0].started))
        else:
            run = []
    return best


def p99_ms(outcomes: list[Outcome]) -> int | None:
    latencies = sorted(o.latency for o in outcomes)
    return round(1000 * latencies[int(len(latencies) * 0.99)]) if latencies else None


def topic_min_insync(brokers: list[str], topic: str) -> str:
    admin = KafkaAdminClient(bootstrap_servers=brokers, client_id="fault-test-configs")
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        admin.close()
    # {resource type: {name: {key: {config data}}}}
    (configs,) = (by_name[topic] for by_name in described.values())
    return configs["min.insync.replicas"]["value"]


def test_partition_leader_then_a_second_broker_killed_mid_stream(kafka_cluster, cluster_env, tmp_path):
    cluster = kafka_cluster
    topic = cluster_env["KAFKA_TOPIC"]
    brokers = cluster.bootstrap_servers
    # The worker created the topics on the cluster: three replicas, two of them needed.
    assert {len(p["replica_nodes"]) for p in cluster.partitions(topic)} == {3}
    assert topic_min_insync(brokers, topic) == "2"
    killed_nodes = []
    try:
        with web_and_worker(
            cluster_env, tmp_path, label="Cluster", polls=1, VOTE_PUBLISH_TIMEOUT="2", VOTE_RETRY_AFTER="1"
        ) as stack:
            (hot,) = stack.polls
            partition = partition_of(hot, settings.KAFKA_TOPIC_PARTITIONS)
            with VoteStream(port=stack.web.port, polls=stack.polls, rate=100, threads=16, timeout=15) as stream:
                stream.wait_for(ACCEPTED, 200, timeout=60)

                first = cluster.leader_of(topic, partition)
                killed = time.monotonic()
                first.kill()
                killed_nodes.append(first)
                # One broker down: a new leader from the in-sync replicas, and votes go on.
                stream.wait_for(ACCEPTED, 300, since=killed, timeout=60)

                second = cluster.leader_of(topic, partition)
                assert second is not first
                killed_again = time.monotonic()
                second.kill()
                killed_nodes.append(second)
                dead = time.monotonic()
                try:
                    stream.wait_for(REFUSED, 40, since=dead, timeout=60)
                finally:
                    restarting = time.monotonic()
                    cluster.start_nodes(killed_nodes)
                    killed_nodes.clear()
                    ready = time.monotonic()
                stream.wait_for(ACCEPTED, 200, since=ready, timeout=90)
            outcomes = stream.outcomes()

            in_topic = {e.vote_id for e in topic_events(brokers=brokers, topic=topic)}
            refused = [o for o in outcomes if o.kind == REFUSED]
            written = [o for o in refused if str(expected_vote_id(o)) in in_topic]
            failover = [o for o in outcomes if killed <= o.started < killed_again]
            below_min_isr = [o for o in outcomes if o.started >= dead and o.ended <= restarting]
            run_votes, run_seconds = longest_refused_run(failover)
            retries = resend(port=stack.web.port, outcomes=refused, first_seq=10_000_000)
            report = settle(outcomes=outcomes + retries, poll_ids=stack.polls, brokers=brokers, topic=topic)
            print(
                f"\n{report.line()}\nleader of {topic}[{partition}] (node {first.node_id}) killed; "
                f"with one broker down for {killed_again - killed:.1f} s: {summarize(failover)}, "
                f"longest run of 503s {run_votes} votes over {run_seconds:.2f} s, "
                f"p99 of every answer {p99_ms(failover)} ms; "
                f"then node {second.node_id} killed: two down {restarting - killed_again:.1f} s, "
                f"restart took {ready - restarting:.1f} s; below min ISR: {summarize(below_min_isr)}; "
                f"{len(written)} of {len(refused)} votes answered 503 were written anyway; "
                f"retries: {summarize(retries)}"
            )
            report.assert_exact()
            assert {o.key for o in retries if o.kind == ACCEPTED} == {o.key for o in refused}

            # With one broker down, voting went on (the 300 votes above) and every answer was
            # a 204 or a 503, never an error or a timeout.
            assert {o.kind for o in outcomes} <= {ACCEPTED, REFUSED}, summarize(outcomes)
            # Below the minimum in-sync replicas: only 503s, and none of those votes in the log.
            assert len(below_min_isr) >= 40
            assert {o.kind for o in below_min_isr} == {REFUSED}, summarize(below_min_isr)
            assert not {str(expected_vote_id(o)) for o in below_min_isr} & in_topic
            assert stack.worker.alive(), stack.worker.log()[-3000:]
    finally:
        cluster.start_nodes(killed_nodes)
        cluster.wait_in_sync(topic)
