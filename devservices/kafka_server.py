"""Apache Kafka run from the jars Maven put in ``<repo>/.services/kafka-<version>/libs``.

``KafkaServer`` is a single KRaft node (broker and controller in one process);
``KafkaZooKeeperServer`` is a Kafka 3.9 broker with the ZooKeeper it needs, both from
the same classpath.
"""

from __future__ import annotations

import base64
import re
import shutil
import socket
import subprocess
import time
import uuid
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path

from ._base import Service, ServiceError, free_port, port_open
from .install import KAFKA_VERSION, KAFKA_ZK_VERSION, ensure_kafka_jars

# Defaults for a one-node cluster: internal topics with one replica (the defaults of
# 3 cannot be met) and one partition (less to create on first use), no rebalance delay
# (consumer groups form at once), and topics only as the application creates them.
_SINGLE_NODE = {
    "num.partitions": "3",
    "auto.create.topics.enable": "false",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "1",
    "group.initial.rebalance.delay.ms": "0",
}

# Share groups (KIP-932) exist from Kafka 4.0 on; 3.9 would warn about unknown keys.
_SINGLE_NODE_4X = {
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "share.coordinator.state.topic.num.partitions": "1",
}

_JVM_FLAGS = [
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    # C1 only, no C2 (also for ZooKeeper and the format tool): on two cores the JIT
    # compiler threads were the broker's largest CPU user, and C1 alone serves the same
    # load for less (docs/decisions/0009-broker-and-postgres-settings.md).
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
]

# INFO overall, but not the loggers that repeat for every request, partition or
# config dump; warnings and errors from them still get through.
_QUIET_LOGGERS = [
    "kafka.request.logger",
    "state.change.logger",
    "kafka.authorizer.logger",
    "org.apache.kafka.common.config",
    "org.apache.kafka.clients",
    "org.apache.zookeeper",
]
_LOG_PATTERN = "[%d] %p %m (%c)%n"


def _java() -> Path:
    java = shutil.which("java")
    if java is None:
        raise ServiceError("java is not installed: run ensure_installed(kafka=True)")
    return Path(java)


def _logging_flags(version: str, directory: Path) -> list[str]:
    """Write a console-only logging config into ``directory``; return the JVM flags for it.

    The console is the service's log file. Kafka 4.x logs through log4j 2 (the binding
    that pom-4.xml adds); Kafka 3.x and its ZooKeeper through log4j 1 (reload4j).
    """
    if version.startswith("3."):
        path = directory / "log4j.properties"
        lines = [
            "log4j.rootLogger=INFO, stdout",
            "log4j.appender.stdout=org.apache.log4j.ConsoleAppender",
            "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout",
            f"log4j.appender.stdout.layout.ConversionPattern={_LOG_PATTERN}",
            *(f"log4j.logger.{name}=WARN" for name in _QUIET_LOGGERS),
        ]
        flag = f"-Dlog4j.configuration=file:{path}"
    else:
        path = directory / "log4j2.properties"
        lines = [
            "status = warn",
            # Log4j's own hook would stop logging while Kafka is still shutting down.
            "shutdownHook = disable",
            "appender.stdout.type = Console",
            "appender.stdout.name = STDOUT",
            "appender.stdout.layout.type = PatternLayout",
            f"appender.stdout.layout.pattern = {_LOG_PATTERN}",
            "rootLogger.level = INFO",
            "rootLogger.appenderRef.stdout.ref = STDOUT",
        ]
        for i, name in enumerate(_QUIET_LOGGERS):
            lines += [f"logger.quiet{i}.name = {name}", f"logger.quiet{i}.level = WARN"]
        flag = f"-Dlog4j2.configurationFile={path}"
    path.write_text("\n".join(lines) + "\n")
    return [flag]


def _write_properties(path: Path, properties: Mapping[str, str]) -> None:
    path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))


def _new_cluster_id() -> str:
    """What ``kafka-storage random-uuid`` prints: URL-safe base64 of 16 random bytes."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):  # would be taken for a command-line option
            return cluster_id


def _admin_client_works(bootstrap: str) -> bool:
    """Whether kafka-python's admin client can list topics; True if kafka-python is absent."""
    try:
        from kafka import KafkaAdminClient
    except ImportError:
        return True
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, bootstrap_timeout_ms=5000)
    except Exception:
        return False
    try:
        admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        admin.close()


class _KafkaBroker(Service):
    """What both Kafka flavours share: classpath, JVM, properties file, readiness."""

    name = "kafka"
    ready_timeout = 120.0
    stop_timeout = 60.0
    # The log line (a regex) the broker prints once it serves clients.
    started_pattern: str
    # Set by _prepare(), before every launch.
    _libs: Path
    _logging: list[str]

    def __init__(
        self,
        *,
        port: int,
        data_dir: Path | str,
        version: str,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(port=port, data_dir=data_dir)
        self.version = version
        self.properties = dict(properties or {})
        self.log_dirs = self.data_dir / "data"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def properties_file(self) -> Path:
        return self.data_dir / "server.properties"

    @abstractmethod
    def _broker_properties(self) -> dict[str, str]:
        """The flavour's own settings (listeners, cluster membership)."""

    def _executable(self) -> Path:
        return _java()

    def _prepare(self) -> None:
        self._libs = ensure_kafka_jars(self.version)
        self._logging = _logging_flags(self.version, self.data_dir)
        settings = {
            **self._broker_properties(),
            **_SINGLE_NODE,
            **({} if self.version.startswith("3.") else _SINGLE_NODE_4X),
            "log.dirs": str(self.log_dirs),
            **self.properties,
        }
        _write_properties(self.properties_file, settings)

    def _java_command(self, heap: Sequence[str], main: str, *args: str) -> list[str]:
        # The classpath wildcard is expanded by java itself, not by a shell.
        return [
            str(self._executable()),
            *heap,
            *_JVM_FLAGS,
            *self._logging,
            "-cp",
            f"{self._libs}/*",
            main,
            *args,
        ]

    def _command(self) -> list[str]:
        heap = ["-Xms256m", "-Xmx512m"]
        return self._java_command(heap, "kafka.Kafka", str(self.properties_file))

    def _probe_ready(self) -> bool:
        # The listener opens before the broker can serve (e.g. while it is still fenced),
        # so also wait for its "started" line, then check with a real client.
        return (
            port_open(self.port)
            and re.search(self.started_pattern, self._log_since_start()) is not None
            and _admin_client_works(self.bootstrap)
        )


class KafkaServer(_KafkaBroker):
    """A single KRaft node (``process.roles=broker,controller``) on 127.0.0.1.

    Clients use ``bootstrap``; the controller listens on ``controller_port``. The log
    directory is formatted only on the first start, so a restart (also after
    ``kill()``) keeps every committed message.
    """

    started_pattern = r"Kafka Server started"

    def __init__(
        self,
        *,
        port: int,
        data_dir: Path | str,
        controller_port: int | None = None,
        version: str = KAFKA_VERSION,
        properties: Mapping[str, str] | None = None,
        node_id: int = 1,
        quorum_voters: str | None = None,
        cluster_id: str | None = None,
    ) -> None:
        super().__init__(port=port, data_dir=data_dir, version=version, properties=properties)
        self.controller_port = free_port() if controller_port is None else controller_port
        # A member of a KafkaCluster names every voter and shares the cluster's id; a
        # lone node is its own quorum with an id of its own.
        self.node_id = node_id
        self.quorum_voters = quorum_voters or f"{node_id}@127.0.0.1:{self.controller_port}"
        self.cluster_id = cluster_id

    def _ports(self) -> Sequence[int]:
        return (self.port, self.controller_port)

    def _broker_properties(self) -> dict[str, str]:
        listeners = f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
        return {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            # A static voter set rather than a bootstrapped dynamic quorum (format
            # --standalone): the latter records the controller's address in the log
            # at format time, which would pin a data dir to its first controller port.
            "controller.quorum.voters": self.quorum_voters,
            "controller.listener.names": "CONTROLLER",
            "listeners": listeners,
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        }

    def _prepare(self) -> None:
        super()._prepare()
        if (self.log_dirs / "meta.properties").exists():
            return
        format_command = self._java_command(
            ["-Xmx256m"],
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            self.cluster_id or _new_cluster_id(),
            "--config",
            str(self.properties_file),
        )
        result = subprocess.run(format_command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if result.returncode != 0:
            output = result.stdout + result.stderr
            raise ServiceError(f"formatting {self.log_dirs} failed:\n{output}")


class ZooKeeperServer(Service):
    """The ZooKeeper that a ``KafkaZooKeeperServer`` broker registers with."""

    name = "zookeeper"
    _libs: Path
    _logging: list[str]

    def __init__(self, *, port: int, data_dir: Path | str, version: str = KAFKA_ZK_VERSION) -> None:
        super().__init__(port=port, data_dir=data_dir)
        self.version = version

    def _executable(self) -> Path:
        return _java()

    def _prepare(self) -> None:
        self._libs = ensure_kafka_jars(self.version)
        self._logging = _logging_flags(self.version, self.data_dir)
        _write_properties(
            self.data_dir / "zoo.cfg",
            {
                "tickTime": "2000",
                "dataDir": str(self.data_dir / "data"),
                "clientPort": str(self.port),
                "clientPortAddress": "127.0.0.1",
                "admin.enableServer": "false",  # its HTTP console would take port 8080
                "4lw.commands.whitelist": "srvr,dump",
            },
        )

    def _command(self) -> list[str]:
        return [
            str(self._executable()),
            "-Xmx256m",
            *_JVM_FLAGS,
            *self._logging,
            "-cp",
            f"{self._libs}/*",
            "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            str(self.data_dir / "zoo.cfg"),
        ]

    def _probe_ready(self) -> bool:
        try:
            return self.four_letter_command("srvr").startswith("Zookeeper version")
        except OSError:
            return False

    def four_letter_command(self, command: str) -> str:
        """Send one of ZooKeeper's four-letter commands; return its whole answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(command.encode())
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "replace")

    def wait_ephemeral_gone(self, path: str, timeout: float) -> None:
        """Wait until no session holds the ephemeral znode ``path`` (per ``dump``)."""
        deadline = time.monotonic() + timeout
        while path in self.four_letter_command("dump").split():
            if time.monotonic() > deadline:
                raise ServiceError(f"zookeeper still has {path} after {timeout:.0f} s")
            time.sleep(0.5)


class KafkaZooKeeperServer(_KafkaBroker):
    """A Kafka 3.9 broker on 127.0.0.1:``port`` with its ZooKeeper on ``zk_port``.

    ``start()`` starts ZooKeeper first if needed and ``stop()`` stops both, while
    ``kill()`` and ``restart()`` act on the broker alone, as when a broker crashes or
    is bounced while ZooKeeper stays up; ``zookeeper`` gives direct control over it.
    """

    started_pattern = r"\[KafkaServer id=\d+\] started"

    def __init__(
        self,
        *,
        port: int,
        zk_port: int,
        data_dir: Path | str,
        version: str = KAFKA_ZK_VERSION,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(port=port, data_dir=data_dir, version=version, properties=properties)
        self.zookeeper = ZooKeeperServer(port=zk_port, data_dir=self.data_dir / "zookeeper", version=version)

    @property
    def broker_id(self) -> str:
        return self.properties.get("broker.id", "0")

    def _broker_properties(self) -> dict[str, str]:
        return {
            "broker.id": self.broker_id,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "zookeeper.connect": f"127.0.0.1:{self.zookeeper.port}",
            # A restarted broker must wait for its previous session to expire before it
            # can re-register; ZooKeeper's minimum (2 x tickTime) keeps that short.
            "zookeeper.session.timeout.ms": "6000",
        }

    def start(self, timeout: float | None = None) -> None:
        zookeeper_was_running = self.zookeeper.is_running()
        self.zookeeper.start()
        try:
            if not self.is_running():
                # After a kill, the dead broker's registration lives on until ZooKeeper
                # expires its session, and a broker that finds it exits at once
                # (NodeExistsException), so wait it out first.
                self.zookeeper.wait_ephemeral_gone(f"/brokers/ids/{self.broker_id}", timeout=60)
            super().start(timeout)
        except BaseException:
            if not zookeeper_was_running:
                self.zookeeper.stop()
            raise

    def stop(self, timeout: float | None = None) -> None:
        super().stop(timeout)
        self.zookeeper.stop()

    def restart(self, timeout: float | None = None) -> None:
        super().stop()
        self.start(timeout)
