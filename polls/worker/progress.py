"""What the worker did: totals since it started, and a progress line every `interval` seconds."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from polls.worker.batches import BatchOutcome
from polls.worker.lag import LagMonitor

logger = logging.getLogger(__name__)


@dataclass
class Progress:
    """What the worker did since it started (or since the last progress line)."""

    batches: int = 0
    messages: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0

    def add(self, outcome: BatchOutcome) -> None:
        self.batches += 1
        self.messages += outcome.messages
        self.applied += outcome.applied
        self.duplicates += outcome.duplicates
        self.dead_lettered += outcome.dead_lettered


class ProgressReport:
    """Counts each batch done and logs a progress line, with the lag, every `interval` seconds (0: never)."""

    def __init__(self, *, interval: float, lag_monitor: LagMonitor | None) -> None:
        self.interval = interval
        self.lag_monitor = lag_monitor
        self.total = Progress()
        self._since_report = Progress()
        self._last_report = time.monotonic()

    def batch_done(self, outcome: BatchOutcome) -> None:
        self.total.add(outcome)
        self._since_report.add(outcome)
        logger.info(
            "batch of %d: %d applied, %d duplicates, %d dead-lettered",
            outcome.messages,
            outcome.applied,
            outcome.duplicates,
            outcome.dead_lettered,
        )

    def maybe_report(self) -> None:
        if self.interval <= 0:
            return
        now = time.monotonic()
        elapsed = now - self._last_report
        if elapsed < self.interval:
            return
        done = self._since_report
        lags = self.lag_monitor.lags if self.lag_monitor is not None else {}
        lag = sum(lags.values())
        logger.info(
            "progress: %d votes applied, %d duplicates, %d dead-lettered in %d batches over the last %.0f s "
            "(%.1f votes/s); %d applied since start; lag %d on %d partitions",
            done.applied,
            done.duplicates,
            done.dead_lettered,
            done.batches,
            elapsed,
            done.applied / elapsed,
            self.total.applied,
            lag,
            len(lags),
            extra={
                "progress": {
                    "interval_s": round(elapsed, 1),
                    "batches": done.batches,
                    "votes_applied": done.applied,
                    "duplicates": done.duplicates,
                    "dead_lettered": done.dead_lettered,
                    "votes_applied_total": self.total.applied,
                    "batches_total": self.total.batches,
                    "lag": lag,
                    "lag_by_partition": {f"{topic}[{partition}]": n for (topic, partition), n in sorted(lags.items())},
                }
            },
        )
        self._since_report = Progress()
        self._last_report = now
