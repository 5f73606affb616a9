"""Section 8 (opt-in, --only cluster): the price of replication.

The product's vote intake (section 1's load: POST /polls/{id}/vote, N clients, one hot
poll) with the vote topic on a three-broker cluster (replication factor 3,
min.insync.replicas 2, acks=all waiting for two brokers) beside the same intake on the
single broker (replication factor 1), rounds alternated in one run. Both brokers' shapes
run the whole time, so each is measured beside the same machine load. Every vote
answered 204 must be in PostgreSQL once.
"""

from __future__ import annotations

import copy

from bench.common import LoadResult, Row, log, median, paired_ratio
from bench.intake import _accepted, _describe, _error_note, _load, _wait_counted, start_stack
from devservices import KafkaCluster


def run_cluster(ctx) -> list[Row]:
    cluster = KafkaCluster(data_dir=ctx.work_dir / "kafka-cluster", size=3)
    cluster.start()
    stacks = {}
    try:
        log(f"cluster: three brokers up at {cluster.bootstrap}")
        # The same services, but the votes go to the cluster, whose CPU counts as a service's.
        on_cluster = copy.copy(ctx)
        on_cluster.services = copy.copy(ctx.services)
        on_cluster.services.kafka_bootstrap = cluster.bootstrap
        on_cluster.services.servers = [*ctx.services.servers, *cluster.nodes]
        contexts = {"1 broker": ctx, "3 brokers": on_cluster}
        for name, context in contexts.items():
            stacks[name] = start_stack(context, name=f"kafka{name[0]}", floor=False, naive=False)
        results: dict[str, list[LoadResult]] = {name: [] for name in stacks}
        order = list(stacks)
        for round_index in range(ctx.runs):
            for name in order[round_index % 2 :] + order[: round_index % 2]:
                stack = stacks[name]
                result = _load(
                    contexts[name], stack.product, f"/polls/{stack.poll_id}/vote", stack.poll_id, worker=stack.worker
                )
                results[name].append(result)
                log(f"cluster round {round_index + 1}/{ctx.runs} {name}: {_describe(result)}")
        counted = {}
        for name, stack in stacks.items():
            accepted = sum(_accepted(r) for r in results[name])
            rows, _ = _wait_counted(stack.database_url, stack.poll_id, accepted, timeout=120)
            counted[name] = (accepted, rows)
    finally:
        for stack in stacks.values():
            stack.stop()
        cluster.stop()

    def figure(name: str, attr: str) -> list[float]:
        return [getattr(r, attr) for r in results[name]]

    notes = "; ".join(
        f"{name}: all {accepted:,} votes answered 204 counted"
        if rows == accepted
        else f"{name}: MISMATCH, {accepted:,} answered 204, {rows:,} rows"
        for name, (accepted, rows) in counted.items()
    )
    errors = "".join(_error_note(results[name]) for name in results)
    c = ctx.connections
    return [
        Row(
            "8 cluster",
            f"votes/s, {c} clients, 3 brokers (RF 3, min ISR 2)",
            median(figure("3 brokers", "rps")),
            "votes/s",
            "1 broker (RF 1)",
            median(figure("1 broker", "rps")),
            paired_ratio(figure("3 brokers", "rps"), figure("1 broker", "rps")),
            note=f"{notes}{errors}",
            runs=figure("3 brokers", "rps"),
        ),
        Row(
            "8 cluster",
            "latency p50, 3 brokers",
            median(figure("3 brokers", "p50_ms")),
            "ms",
            "1 broker p50",
            median(figure("1 broker", "p50_ms")),
            paired_ratio(figure("3 brokers", "p50_ms"), figure("1 broker", "p50_ms")),
        ),
        Row(
            "8 cluster",
            "latency p99, 3 brokers",
            median(figure("3 brokers", "p99_ms")),
            "ms",
            "1 broker p99",
            median(figure("1 broker", "p99_ms")),
            paired_ratio(figure("3 brokers", "p99_ms"), figure("1 broker", "p99_ms")),
        ),
    ]
