"""Broadcast of new poll totals to WebSocket viewers, after the database committed.

    votes_apply (batch transaction) ─► broadcast_polls_on_commit ─► commit
        ─► Broadcaster.request(poll ids)          (returns at once: a dict update)
        ─► broadcaster thread, per poll at most BROADCAST_MAX_PER_SECOND:
             read the poll's totals fresh ─► group_send "poll.<id>" and "polls"

Coalescing is per poll, with a leading and a trailing edge: the first request after a
quiet spell is sent at once, requests within the next 1/rate seconds are folded into one
send at the end of that interval. The totals are read when the send happens, not when it
was requested, so the folded send carries everything committed before it: the last state
always goes out, whatever the vote rate.

The batch loop never waits for Redis or for the read: both happen on the broadcaster's
own thread. A send that fails (Redis down, timeout) is logged and tried again a second
later, read afresh, until the layer takes it. (A viewer whose own subscription Redis
dropped meanwhile gets it only if its process has subscribed again by then; otherwise
at the poll's next change, or when it reconnects.)

The limit holds per broadcasting process. Votes are keyed by poll in Kafka, so one
poll's votes are applied by one worker at a time, and so broadcast by one process.

A poll's deadline (closes_at) passing changes nothing in the database, yet its status
turns closed and an after-close poll's counts are shown. A broadcaster that watches
deadlines (the worker's; the web process's in the embedded mode) looks every second
for polls whose deadline passed since it last looked and broadcasts them like any
other change.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from polls.domain.live import poll_ids_deadline_passed, polls_live_totals
from polls.models import Poll
from realtime.events import (
    POLLS_GROUP,
    leaderboard_updated_layer_message,
    poll_group,
    poll_removed_layer_message,
    poll_results_group,
    poll_updated_layer_message,
)
from realtime.selectors import leaderboard_snapshot

logger = logging.getLogger(__name__)

# The leaderboard is coalesced like a poll, under this key: it changes with any vote.
LEADERBOARD = "leaderboard"
# After a failed read of the totals (database down) or send (Redis down), the same polls
# are tried again this much later, so their last state still goes out once it is back.
_RETRY_SECONDS = 1.0
# How often a broadcaster that watches deadlines looks for polls whose closes_at passed,
# and how far back its first look goes (a worker restarted just after a deadline).
_DEADLINE_SWEEP_SECONDS = 1.0
_DEADLINE_LOOKBACK_SECONDS = 60.0
# What _next_due returns when it is time to look for passed deadlines.
_SWEEP: list[int | str] = []
# Failed sends are logged at most this often, with how many were dropped meanwhile, so
# a Redis outage does not turn into ten log lines a second per poll.
_FAILURE_LOG_INTERVAL = 10.0


def broadcast_polls_on_commit(*, poll_ids: Iterable[int]) -> None:
    """Queue a broadcast of these polls' totals for when the current transaction commits.

    Call inside the transaction that changed the polls' counters; nothing is sent if it
    rolls back.
    """
    transaction.on_commit(functools.partial(_broadcast_polls, poll_ids=frozenset(poll_ids)))


def _broadcast_polls(*, poll_ids: frozenset[int]) -> None:
    get_broadcaster().request(poll_ids=poll_ids)


def deadlines_watch() -> None:
    """Have this process's broadcaster send the polls whose deadline passes (the vote-applying process)."""
    get_broadcaster().watch_deadlines()


class Broadcaster:
    """Coalesces broadcast requests per poll and sends them from one background thread."""

    def __init__(self, *, max_per_second: float, send_timeout: float, leaderboard: bool = True) -> None:
        self.interval = 1.0 / max_per_second
        self.send_timeout = send_timeout
        self.leaderboard = leaderboard
        self._cond = threading.Condition()
        # key (poll id or LEADERBOARD) -> monotonic time its send is due
        self._due: dict[int | str, float] = {}
        # key -> monotonic time of its last send, for the rate limit
        self._last_sent: dict[int | str, float] = {}
        # key -> the last message text sent for it: a send that would repeat it is
        # skipped (a commit whose request came in after the read that already saw it).
        self._last_text: dict[int | str | tuple[int, str], str] = {}
        self._sending = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        # The loop the in-memory layer's consumers run on (see attach_event_loop).
        self._consumer_loop: asyncio.AbstractEventLoop | None = None
        self._dropped = 0
        self._last_failure_log = 0.0
        self.sends = 0
        # Watching deadlines: polls whose closes_at passed after this moment and up to the
        # last look have been requested; the next look is due at _next_sweep (monotonic).
        self._deadlines_seen_until: datetime | None = None
        self._next_sweep: float | None = None

    # -- called from any thread ---------------------------------------------------------

    def request(self, *, poll_ids: Iterable[int]) -> None:
        """Ask for these polls' totals to be broadcast; never blocks on I/O."""
        now = time.monotonic()
        with self._cond:
            if self._stopping:
                return
            keys: list[int | str] = list(poll_ids)
            if self.leaderboard and keys:
                keys.append(LEADERBOARD)
            for key in keys:
                if key not in self._due:
                    self._due[key] = max(now, self._last_sent.get(key, float("-inf")) + self.interval)
            self._start_thread()
            self._cond.notify_all()

    def _start_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="realtime-broadcaster", daemon=True)
            self._thread.start()

    def watch_deadlines(self) -> None:
        """From now on, also broadcast every poll whose deadline passes (idempotent).

        Looks every second, from a minute back on the first look. Each process that
        watches broadcasts a passing deadline once: with several workers the viewers
        get it once from each, the same totals every time.
        """
        with self._cond:
            if self._stopping or self._next_sweep is not None:
                return
            self._deadlines_seen_until = timezone.now() - timedelta(seconds=_DEADLINE_LOOKBACK_SECONDS)
            self._next_sweep = time.monotonic()
            self._start_thread()
            self._cond.notify_all()

    def attach_event_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Tell the broadcaster which loop this process's consumers run on.

        Needed only with the in-memory layer: its group_send puts into asyncio queues of
        the consumers' loop, which is not thread-safe and would not wake that loop, so
        sends must run there. Redis layers need no such thing: they cross processes.
        """
        self._consumer_loop = loop

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every requested broadcast went out; False if it took longer."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._due or self._sending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is pending (within timeout), then end the thread."""
        self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._due.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- the broadcaster thread -------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            while True:
                keys = self._next_due()
                if keys is None:
                    return
                try:
                    if keys is _SWEEP:
                        self._request_passed_deadlines()
                    else:
                        self._send(keys, loop)
                finally:
                    with self._cond:
                        self._sending = False
                        # A thread that looks for deadlines every second keeps its connection.
                        idle = not self._due and self._next_sweep is None
                        self._cond.notify_all()
                    if idle:
                        # No persistent connection for an idle thread: it would hold a
                        # PostgreSQL slot for nothing (and block dropping a test database).
                        connections.close_all()
        finally:
            connections.close_all()
            loop.close()

    def _next_due(self) -> list[int | str] | None:
        """Block until some keys are due and take them, or _SWEEP when it is time to
        look for passed deadlines; None when stopping."""
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                ready = [key for key, due in self._due.items() if due <= now]
                if ready:
                    for key in ready:
                        del self._due[key]
                        # Taken out of _due before the read: a commit from now on
                        # requests a new send rather than relying on this one.
                        self._last_sent[key] = now
                    self._sending = True
                    self._forget_old(now)
                    return ready
                if self._next_sweep is not None and self._next_sweep <= now:
                    self._next_sweep = now + _DEADLINE_SWEEP_SECONDS
                    self._sending = True
                    return _SWEEP
                wakeups = [*self._due.values(), *([self._next_sweep] if self._next_sweep is not None else [])]
                self._cond.wait(min(wakeups) - now if wakeups else None)
            return None

    def _request_passed_deadlines(self) -> None:
        """Request a broadcast of the open, visible polls whose deadline passed since the last look."""
        until = timezone.now()
        try:
            poll_ids = poll_ids_deadline_passed(after=self._deadlines_seen_until, until=until)
        except Exception as exc:  # noqa: BLE001 - the database down: the next look covers this one's span
            connections.close_all()
            self._note_failure(f"looking for passed deadlines failed ({exc!r})")
            return
        self._deadlines_seen_until = until
        if poll_ids:
            self.request(poll_ids=poll_ids)

    def _forget_old(self, now: float) -> None:
        if len(self._last_sent) > 1000:
            self._last_sent = {k: t for k, t in self._last_sent.items() if t > now - self.interval}
            self._last_text = {
                k: text
                for k, text in self._last_text.items()
                if (k[0] if isinstance(k, tuple) else k) in self._last_sent
            }

    def _send(self, keys: list[int | str], loop: asyncio.AbstractEventLoop) -> None:
        poll_ids = [key for key in keys if key != LEADERBOARD]
        try:
            totals = polls_live_totals(poll_ids=poll_ids) if poll_ids else {}
            leaderboard = leaderboard_snapshot() if LEADERBOARD in keys else None
        except Exception as exc:  # noqa: BLE001 - whatever the database says, the thread lives on
            connections.close_all()
            self._note_failure(f"reading totals of {keys} failed ({exc!r}); retrying in {_RETRY_SECONDS} s")
            self._retry_later(keys)
            return

        # (key, group, message): the key is sent again if its message does not go out.
        messages: list[tuple[int | str, str, dict[str, Any]]] = []
        for poll_id in poll_ids:
            live = totals.get(poll_id)
            if live is None:
                # Hidden by a moderator or deleted since: its viewers are told to leave.
                removed = poll_removed_layer_message(poll_id=poll_id)
                if self._is_new(poll_id, removed["text"]):
                    messages += [
                        (poll_id, group, removed)
                        for group in (poll_group(poll_id), poll_results_group(poll_id), POLLS_GROUP)
                    ]
                continue
            public = poll_updated_layer_message(totals=live.public)
            # Counts held back: the public totals change only with the poll's state, so
            # a batch sends the public groups nothing (nor tells them, by the rate of
            # updates, how many came in); the voters' results group still gets each.
            public_is_new = self._is_new(poll_id, public["text"])
            if public_is_new:
                messages += [(poll_id, poll_group(poll_id), public), (poll_id, POLLS_GROUP, public)]
            if live.full is not None:
                full = poll_updated_layer_message(totals=live.full)
                if self._is_new((poll_id, "full"), full["text"]):
                    messages.append((poll_id, poll_results_group(poll_id), full))
            elif public_is_new and live.public["results_visibility"] == Poll.Visibility.AFTER_VOTE:
                # Closed: the public totals show the counts now. The voters who watch
                # from the results group (and left the public one) are told too.
                messages.append((poll_id, poll_results_group(poll_id), public))
        if leaderboard is not None:
            board = leaderboard_updated_layer_message(leaderboard=leaderboard)
            if self._is_new(LEADERBOARD, board["text"]):
                messages.append((LEADERBOARD, POLLS_GROUP, board))
        if not messages:
            return
        failed = self._group_send_all([(group, message) for _, group, message in messages], loop)
        if failed:
            # Sent again, read afresh, until the layer takes them: the last state of a
            # poll must go out even if no change follows. Forgotten as sent, or the next
            # send of the same totals would be skipped as a repeat.
            self._retry_later({messages[index][0] for index in failed}, forget_sent=True)

    def _retry_later(self, keys: Iterable[int | str], *, forget_sent: bool = False) -> None:
        """Make these keys due again in _RETRY_SECONDS (unless due sooner); forget_sent:
        also forget what was last sent for them, so the retry is not skipped as a repeat."""
        with self._cond:
            retry_at = time.monotonic() + _RETRY_SECONDS
            for key in keys:
                if forget_sent:
                    self._last_text.pop(key, None)
                    self._last_text.pop((key, "full"), None)
                self._due.setdefault(key, retry_at)

    def _is_new(self, key: int | str | tuple[int, str], text: str) -> bool:
        if self._last_text.get(key) == text:
            return False
        self._last_text[key] = text
        return True

    def _group_send_all(self, messages: list[tuple[str, dict[str, Any]]], loop: asyncio.AbstractEventLoop) -> list[int]:
        """Send each message to its group; the indexes of those that failed."""
        from channels.layers import InMemoryChannelLayer, get_channel_layer

        layer = get_channel_layer()
        if layer is None:
            return []

        async def send_all() -> list[Any]:
            return await asyncio.wait_for(
                asyncio.gather(
                    *(layer.group_send(group, message) for group, message in messages), return_exceptions=True
                ),
                timeout=self.send_timeout,
            )

        try:
            if isinstance(layer, InMemoryChannelLayer):
                if self._consumer_loop is None or self._consumer_loop.is_closed():
                    return []  # no consumer ever ran in this process: nobody could receive it
                results = asyncio.run_coroutine_threadsafe(send_all(), self._consumer_loop).result(
                    self.send_timeout + 1
                )
            else:
                results = loop.run_until_complete(send_all())
        except Exception as exc:  # noqa: BLE001 - timeouts and closed loops alike: sent again later
            self._note_failure(f"{len(messages)} group sends failed, to be sent again: {exc!r}")
            return list(range(len(messages)))
        failed = [index for index, result in enumerate(results) if isinstance(result, BaseException)]
        if failed:
            self._note_failure(
                f"{len(failed)} of {len(messages)} group sends failed, to be sent again: {results[failed[0]]!r}"
            )
        self.sends += len(messages) - len(failed)
        return failed

    def _note_failure(self, what: str) -> None:
        self._dropped += 1
        now = time.monotonic()
        if now - self._last_failure_log >= _FAILURE_LOG_INTERVAL:
            logger.warning("broadcast: %s (%d failures since the last report)", what, self._dropped)
            self._last_failure_log = now
            self._dropped = 0


_broadcaster: Broadcaster | None = None
_broadcaster_lock = threading.Lock()


def get_broadcaster() -> Broadcaster:
    """This process's broadcaster, built from the settings on first use."""
    global _broadcaster
    with _broadcaster_lock:
        if _broadcaster is None:
            _broadcaster = Broadcaster(
                max_per_second=settings.BROADCAST_MAX_PER_SECOND,
                send_timeout=settings.BROADCAST_SEND_TIMEOUT,
            )
            # A worker stopped by SIGTERM right after a batch still sends that batch's
            # trailing update: the thread is a daemon and would otherwise die with it.
            atexit.register(_broadcaster.stop, 2.0)
        return _broadcaster


def reset_broadcaster(timeout: float = 5.0) -> None:
    """Send what is pending, stop the thread, and build anew from the settings next time."""
    global _broadcaster
    with _broadcaster_lock:
        broadcaster, _broadcaster = _broadcaster, None
    if broadcaster is not None:
        broadcaster.stop(timeout)
