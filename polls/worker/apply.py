"""A decoded batch into the database: one transaction, waiting out an outage, then its dead letters.

Safe to run again with the same batch (Kafka delivers at least once): votes_apply skips
the votes already counted.
"""

from __future__ import annotations

import logging
import time

from django.db import DatabaseError, InterfaceError, OperationalError, connection

from polling import metrics
from polls.domain.services import AppliedBatch, votes_apply
from polls.kafka.events import VoteEvent
from polls.worker.batches import BatchOutcome, DecodedBatch, RetryWait, WorkerStopped
from polls.worker.dead_letters import DeadLetterWriter

logger = logging.getLogger(__name__)


class BatchApplier:
    def __init__(self, *, dead_letters: DeadLetterWriter, retry: RetryWait) -> None:
        self.dead_letters = dead_letters
        self.retry = retry

    def apply(self, batch: DecodedBatch) -> BatchOutcome:
        """The database transaction, then the dead letters of what it could not take."""
        started = time.perf_counter()
        result = self._apply_with_retry(batch.events) if batch.events else AppliedBatch()
        poison = batch.poison
        if result.rejected:
            # Built only now: a map per vote would cost every batch a hash of each vote id.
            record_of = {id(event): record for event, record in zip(batch.events, batch.records)}
            poison = poison + [(record_of[id(event)], reason) for event, reason in result.rejected]
        if poison:
            self.dead_letters.write_all(poison)
        outcome = BatchOutcome(
            messages=batch.messages,
            applied=result.applied,
            duplicates=result.duplicates,
            dead_lettered=len(poison),
        )
        metrics.worker_batch_done(
            messages=outcome.messages,
            applied=outcome.applied,
            duplicates=outcome.duplicates,
            dead_lettered=outcome.dead_lettered,
            seconds=batch.seconds + time.perf_counter() - started,
        )
        return outcome

    def _apply_with_retry(self, events: list[VoteEvent]) -> AppliedBatch:
        try:
            return self._retry_while_unreachable(events)
        except DatabaseError as exc:
            # Not an outage but an event the database refuses: find it by applying the
            # batch one vote at a time, and dead-letter only the ones refused.
            logger.warning("batch refused by the database (%s); applying it vote by vote", exc)
            return self._apply_one_by_one(events)

    def _apply_one_by_one(self, events: list[VoteEvent]) -> AppliedBatch:
        total = AppliedBatch()
        for event in events:
            try:
                single = self._retry_while_unreachable([event])
            except DatabaseError as exc:
                total.rejected.append((event, f"refused by the database: {exc}"))
                continue
            total.applied += single.applied
            total.duplicates += single.duplicates
            total.rejected.extend(single.rejected)
            total.poll_ids |= single.poll_ids
        return total

    def _retry_while_unreachable(self, events: list[VoteEvent]) -> AppliedBatch:
        """votes_apply, waiting out an unreachable database (never skipping the batch)."""
        wait = 0.1
        while True:
            try:
                return votes_apply(events=events)
            except (OperationalError, InterfaceError) as exc:
                if self.retry.stop.is_set():
                    raise WorkerStopped from exc
                metrics.WORKER_DATABASE_RETRIES.inc()
                logger.warning("database unavailable, retrying the batch in %.1f s: %s", wait, exc)
                # The connection is unusable after a server restart; drop it so the next
                # attempt opens a fresh one.
                connection.close()
                self.retry.stop.wait(wait)
                wait = min(wait * 2, self.retry.max_seconds)
