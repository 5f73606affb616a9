from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "realtime"

    def ready(self) -> None:
        from polls.domain.watchers import PollsWatcher, polls_watcher_add
        from realtime.broadcast import broadcast_polls_on_commit, deadlines_watch

        # The domain tells the broadcaster what changed without knowing it.
        polls_watcher_add(PollsWatcher(changed_on_commit=broadcast_polls_on_commit, deadlines_watch=deadlines_watch))
