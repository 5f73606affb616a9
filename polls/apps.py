from django.apps import AppConfig


class PollsConfig(AppConfig):
    name = "polls"

    def ready(self) -> None:
        from polls import signals  # noqa: F401 - connects the receivers
