"""Who is told that polls changed: the apps that show them live register here.

The domain knows none of them: realtime adds its broadcaster in RealtimeConfig.ready(),
so imports go one way, realtime -> polls. Only the services call the notices below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class PollsWatcher:
    # Called inside the transaction that changed the polls: act once it commits.
    changed_on_commit: Callable[..., None]
    # Called once by the process that applies votes: watch for deadlines (closes_at) passing.
    deadlines_watch: Callable[[], None]


_watchers: list[PollsWatcher] = []


def polls_watcher_add(watcher: PollsWatcher) -> None:
    _watchers.append(watcher)


def polls_changed_on_commit(*, poll_ids: Iterable[int]) -> None:
    """Tell the watchers, once the current transaction commits, that these polls changed."""
    poll_ids = frozenset(poll_ids)
    for watcher in _watchers:
        watcher.changed_on_commit(poll_ids=poll_ids)


def poll_deadlines_watch() -> None:
    """Have the watchers follow polls whose deadline passes (the vote-applying process calls it)."""
    for watcher in _watchers:
        watcher.deadlines_watch()
