"""Real PostgreSQL, Redis and Kafka servers on 127.0.0.1 for development and tests.

``python -m devservices up`` runs the project's long-lived instances; tests create
their own on free ports in temporary directories with the classes exported here.
"""

from ._base import ServiceError, free_port
from .install import KAFKA_VERSION, KAFKA_ZK_VERSION, ensure_installed
from .kafka_cluster import KafkaCluster
from .kafka_server import KafkaServer, KafkaZooKeeperServer, ZooKeeperServer
from .postgres import PostgresServer
from .redis_server import RedisServer

__all__ = [
    "KAFKA_VERSION",
    "KAFKA_ZK_VERSION",
    "KafkaCluster",
    "KafkaServer",
    "KafkaZooKeeperServer",
    "PostgresServer",
    "RedisServer",
    "ServiceError",
    "ZooKeeperServer",
    "ensure_installed",
    "free_port",
]
