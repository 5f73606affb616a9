"""One three-broker Kafka cluster per test session, for the tests that need replication.

Started on first use (the rest of the suite runs on the stack's single broker), on free
ports in a temporary directory, and stopped at the end of the session.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from devservices import KafkaCluster, ensure_installed

_cluster: KafkaCluster | None = None


def session_cluster() -> KafkaCluster:
    """The session's cluster, started and ready."""
    global _cluster
    if _cluster is None:
        ensure_installed(postgres=False, redis=False, kafka=True)
        root = Path(tempfile.mkdtemp(prefix="polling-test-cluster-"))
        began = time.monotonic()
        _cluster = KafkaCluster(data_dir=root, size=3)
        try:
            _cluster.start()
        except BaseException:
            stop_session_cluster()
            raise
        print(f"\nKafka cluster of 3 up in {time.monotonic() - began:.1f} s: {_cluster.bootstrap}")
    return _cluster


def stop_session_cluster() -> None:
    global _cluster
    if _cluster is not None:
        try:
            _cluster.stop()
        finally:
            shutil.rmtree(_cluster.data_dir, ignore_errors=True)
            _cluster = None
