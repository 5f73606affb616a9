"""The worker's lag, measured at the broker, and the watchdog that acts on it.

Lag is the topic's end offset minus the group's committed offset (or the log's start,
where the group has committed nothing), for each partition the worker holds. It comes
from an admin client of its own, in a thread of its own, so it stays true when the
worker's consumer is stuck: a worker that fetches nothing shows its lag growing.

The watchdog calls a worker stalled when votes have been waiting for `stall_timeout`
seconds (its lag above zero in every measurement) while no batch was in the database and
none finished. It logs an ERROR, counts
it in `polling_worker_stalls_total`, and calls `on_stall` (the command stops the worker
there when WORKER_EXIT_ON_STALL is on, so that its supervisor restarts it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kafka import TopicPartition
from kafka.admin import KafkaAdminClient, OffsetSpec
from kafka.errors import KafkaError

from polling import metrics

logger = logging.getLogger(__name__)

Lags = dict[tuple[str, int], int]


def group_lags(admin: KafkaAdminClient, *, group_id: str, partitions: set[TopicPartition]) -> Lags:
    """End offset minus committed offset (the log start when none) of each partition."""
    if not partitions:
        return {}
    specs = sorted(partitions)
    ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in specs})
    committed = admin.list_group_offsets({group_id: specs}).get(group_id, {})
    uncommitted = [tp for tp in specs if committed.get(tp) is None or committed[tp].offset < 0]
    starts = admin.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in uncommitted}) if uncommitted else {}
    lags: Lags = {}
    for tp in specs:
        done = starts[tp].offset if tp in starts else committed[tp].offset
        lags[(tp.topic, tp.partition)] = max(ends[tp].offset - done, 0)
    return lags


@dataclass
class Activity:
    """What the polling thread tells the watchdog: batches in the database, and when one last ended."""

    in_flight: int = 0
    last_batch_done: float = 0.0


class LagMonitor:
    """Measures the worker's lag every `interval` seconds and watches for a stall.

    `partitions` returns the partitions the worker holds (its consumer's assignment);
    `activity` is updated by the worker. Runs in a daemon thread between start() and stop().
    """

    def __init__(
        self,
        *,
        bootstrap_servers: list[str],
        group_id: str,
        partitions: Callable[[], set[TopicPartition]],
        activity: Activity,
        interval: float = 2.0,
        stall_timeout: float = 60.0,
        on_stall: Callable[[], None] | None = None,
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._group_id = group_id
        self._partitions = partitions
        self._activity = activity
        self._interval = interval
        self._stall_timeout = stall_timeout
        self._on_stall = on_stall
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._admin: KafkaAdminClient | None = None
        self._waiting_since: float | None = None
        self._reported_stall: float | None = None
        # The last measurement; replaced whole, so readers in other threads see one or the other.
        self.lags: Lags = {}

    def start(self) -> None:
        self._stop.clear()
        self._activity.last_batch_done = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="lag-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.measure()
            except Exception:  # the monitor must outlive any one failure
                logger.exception("measuring the worker's lag failed")
            self.check_stall(time.monotonic())

    def measure(self) -> Lags:
        """Ask the broker for the lag of the worker's partitions, and publish it."""
        try:
            if self._admin is None:
                self._admin = KafkaAdminClient(
                    bootstrap_servers=self._bootstrap_servers, client_id="polling-worker-lag"
                )
            lags = group_lags(self._admin, group_id=self._group_id, partitions=set(self._partitions()))
        except KafkaError as exc:
            # The broker is unreachable: the last figures stand until it is back.
            logger.warning("cannot measure the worker's lag: %s", exc)
            return self.lags
        self.lags = lags
        metrics.worker_lag_set(lags)
        return lags

    def check_stall(self, now: float) -> bool:
        """Log, count and act on a stall once per stalled stretch; True while stalled.

        The clock starts at the first measurement that finds votes waiting after the last
        batch ended, so a worker that was paused (or a measurement that was late) is not
        called stalled before it had `stall_timeout` seconds to catch up.
        """
        activity = self._activity
        lag = sum(self.lags.values())
        if self._stall_timeout <= 0 or lag == 0 or activity.in_flight:
            self._waiting_since = None
            return False
        self._waiting_since = max(self._waiting_since or now, activity.last_batch_done)
        waited = now - self._waiting_since
        if waited < self._stall_timeout:
            return False
        if self._reported_stall != self._waiting_since:
            self._reported_stall = self._waiting_since
            metrics.WORKER_STALLS.inc()
            logger.error(
                "worker stalled: %d votes waiting on %d partitions and no batch applied for %.0f s",
                lag,
                len(self.lags),
                waited,
                extra={"stall": {"lag": lag, "waited_s": round(waited, 1)}},
            )
            if self._on_stall is not None:
                self._on_stall()
        return True
