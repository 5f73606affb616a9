"""Three (or any number of) KRaft nodes on 127.0.0.1 forming one replicated Kafka cluster.

Every node is broker and controller; the controller quorum is all of them (a static
voter set), and their storage is formatted with one shared cluster id. Topics and the
internal ones get replication factor min(3, nodes) and ``min.insync.replicas`` 2 when
there are three or more, as production clusters run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ._base import ServiceError, free_port
from .install import KAFKA_VERSION
from .kafka_server import KafkaServer, _new_cluster_id


def replicated_properties(nodes: int) -> dict[str, str]:
    """Broker settings for a cluster of ``nodes``: every internal topic replicated."""
    factor = str(min(3, nodes))
    min_isr = "2" if nodes >= 3 else "1"
    return {
        "default.replication.factor": factor,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": factor,
        "transaction.state.log.replication.factor": factor,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": factor,
        "share.coordinator.state.topic.min.isr": min_isr,
        # A dead broker is fenced (and its partitions get new leaders) after this many ms
        # without a heartbeat: Kafka's 9 s default would keep the partitions it led
        # refusing votes that long.
        "broker.session.timeout.ms": "4000",
        "broker.heartbeat.interval.ms": "1000",
    }


class KafkaCluster:
    """``size`` KafkaServer nodes (ids 1..size) started, stopped and killed together or one by one.

    ``ports`` and ``controller_ports`` default to free ports. ``start()`` launches every
    node at once: a node is only ready once a majority of the quorum runs.
    """

    name = "kafka"

    def __init__(
        self,
        *,
        data_dir: Path | str,
        size: int = 3,
        ports: Sequence[int] | None = None,
        controller_ports: Sequence[int] | None = None,
        version: str = KAFKA_VERSION,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        ports = list(ports) if ports is not None else [free_port() for _ in range(size)]
        controller_ports = (
            list(controller_ports) if controller_ports is not None else [free_port() for _ in range(size)]
        )
        if len(ports) != size or len(controller_ports) != size:
            raise ValueError(f"a cluster of {size} needs {size} ports and {size} controller ports")
        voters = ",".join(f"{n}@127.0.0.1:{port}" for n, port in enumerate(controller_ports, start=1))
        # The id of the first format is kept in every node's meta.properties; a node
        # re-created over existing data reads it there and is not formatted again.
        cluster_id = _new_cluster_id()
        settings = {**replicated_properties(size), **(properties or {})}
        self.nodes = [
            KafkaServer(
                port=port,
                controller_port=controller_port,
                data_dir=self.data_dir / f"node-{n}",
                version=version,
                properties=settings,
                node_id=n,
                quorum_voters=voters,
                cluster_id=cluster_id,
            )
            for n, (port, controller_port) in enumerate(zip(ports, controller_ports, strict=True), start=1)
        ]

    # -- the cluster as one service ----------------------------------------------------

    @property
    def port(self) -> int:
        return self.nodes[0].port

    @property
    def bootstrap(self) -> str:
        """Every node's address, comma-separated: what KAFKA_BROKERS takes."""
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def bootstrap_servers(self) -> list[str]:
        return [node.bootstrap for node in self.nodes]

    @property
    def pid(self) -> int | None:
        """The first node's pid, if every node runs."""
        return self.nodes[0].pid if self.is_running() else None

    def is_running(self) -> bool:
        return all(node.is_running() for node in self.nodes)

    def start(self, timeout: float | None = None) -> None:
        """Start the nodes that are not running, side by side; wait until all are ready."""
        self.start_nodes(self.nodes, timeout=timeout)

    def start_nodes(self, nodes: Sequence[KafkaServer], timeout: float | None = None) -> None:
        if not nodes:
            return
        # Side by side: a node that lost the quorum's majority waits for the others.
        with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
            errors = [error for error in pool.map(lambda node: _start(node, timeout), nodes) if error is not None]
        if errors:
            raise errors[0]

    def wait_ready(self, timeout: float | None = None) -> None:
        for node in self.nodes:
            node.wait_ready(timeout)

    def stop(self, timeout: float | None = None) -> None:
        # Side by side too: a node shutting down cleanly waits for a controller to move
        # its partitions away, which the last nodes standing cannot do once the
        # quorum has lost its majority.
        with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            list(pool.map(lambda node: node.stop(timeout), self.nodes))

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    def node(self, node_id: int) -> KafkaServer:
        return self.nodes[node_id - 1]

    def __enter__(self) -> KafkaCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what a client sees ---------------------------------------------------------------

    def partitions(self, topic: str) -> list[dict]:
        """The topic's partitions as an admin client describes them: ``partition_index``,
        ``leader_id``, ``replica_nodes``, ``isr_nodes`` (kafka-python's keys)."""
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(
            bootstrap_servers=[node.bootstrap for node in self.nodes if node.is_running()],
            client_id="devservices-cluster",
            request_timeout_ms=5000,
        )
        try:
            (described,) = admin.describe_topics([topic])
        finally:
            admin.close()
        if described["error_code"] != 0:
            raise ServiceError(f"describing {topic} failed: error {described['error_code']}")
        return sorted(described["partitions"], key=lambda p: p["partition_index"])

    def leader_of(self, topic: str, partition: int) -> KafkaServer:
        """The node that leads this partition now, per the cluster's metadata."""
        for described in self.partitions(topic):
            if described["partition_index"] == partition and described["leader_id"] > 0:
                return self.node(described["leader_id"])
        raise ServiceError(f"{topic}[{partition}] has no leader")

    def wait_in_sync(self, topic: str, timeout: float = 120) -> None:
        """Wait until every replica of every partition of ``topic`` is in sync again."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                described = self.partitions(topic)
                if described and all(
                    p["leader_id"] > 0 and set(p["isr_nodes"]) == set(p["replica_nodes"]) for p in described
                ):
                    return
            except Exception as error:  # a node still starting may refuse the admin client
                described = [repr(error)]
            if time.monotonic() > deadline:
                raise ServiceError(f"{topic} not fully in sync after {timeout:.0f} s: {described}")
            time.sleep(0.5)


def _start(node: KafkaServer, timeout: float | None) -> BaseException | None:
    try:
        node.start(timeout)
    except BaseException as error:  # reported by the caller, after every node had its try
        return error
    return None
