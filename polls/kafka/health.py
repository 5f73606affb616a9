"""The readiness check of Kafka: the broker answers and the vote topic exists.

Added to /readyz (polling.health) by PollsConfig.ready() when KAFKA_BROKERS is set. It
asks over an admin client kept between probes, so a probe costs one round trip, not a
new handshake.
"""

from __future__ import annotations

import threading

from django.conf import settings
from kafka import KafkaAdminClient
from kafka import errors as kafka_errors
from kafka.errors import UnknownTopicOrPartitionError

from polls.kafka.topics import vote_topic


class VoteTopicMissing(RuntimeError):
    """The broker answers, but the vote topic is not there: no vote could be taken."""


class _KafkaProbe:
    """A KafkaAdminClient kept for readiness probes, created on first use."""

    def __init__(self) -> None:
        self._admin = None
        self._brokers: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def check(self, timeout: float) -> None:
        with self._lock:
            brokers = tuple(settings.KAFKA_BROKERS)
            if self._admin is None or brokers != self._brokers:
                self._close()
                self._admin = _admin_client(brokers, timeout)
                self._brokers = brokers
            admin = self._admin
        # One Metadata request on a kept connection: the cluster answers, and the vote
        # topic exists (only the worker creates it: until it has run, every vote would
        # wait VOTE_PUBLISH_TIMEOUT for the topic and be answered 503).
        topic = vote_topic()
        found = admin.describe_topics([topic])
        error = found[0]["error_code"] if found else UnknownTopicOrPartitionError.errno
        if error == UnknownTopicOrPartitionError.errno:
            raise VoteTopicMissing(f"the vote topic {topic!r} does not exist yet: the worker creates it when it starts")
        if error:
            raise kafka_errors.for_code(error)(f"the vote topic {topic!r}")

    def _close(self) -> None:
        if self._admin is not None:
            try:
                self._admin.close()
            except Exception:  # noqa: BLE001 - already broken; dropping it is all that is left
                pass
            self._admin = None

    def reset(self) -> None:
        with self._lock:
            self._close()


def _admin_client(brokers: tuple[str, ...], timeout: float) -> KafkaAdminClient:
    timeout_ms = max(int(timeout * 1000), 100)
    config = dict(
        bootstrap_servers=list(brokers),
        client_id="polling-readyz",
        request_timeout_ms=timeout_ms,
        bootstrap_timeout_ms=timeout_ms,
        reconnect_backoff_max_ms=1000,
    )
    admin = KafkaAdminClient.__new__(KafkaAdminClient)
    try:
        admin.__init__(**config)
    except BaseException:
        # __init__ starts the client's IO thread before it bootstraps; a failed
        # bootstrap would leave that thread running on every failed probe.
        admin._closed = False
        try:
            admin.close()
        except Exception:  # noqa: BLE001 - the bootstrap's own error is raised below
            pass
        raise
    return admin


_kafka_probe = _KafkaProbe()


def check_kafka(timeout: float) -> None:
    _kafka_probe.check(timeout)


def kafka_configured() -> bool:
    return bool(settings.KAFKA_BROKERS)
