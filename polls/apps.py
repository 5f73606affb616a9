from django.apps import AppConfig


class PollsConfig(AppConfig):
    name = "polls"

    def ready(self) -> None:
        from polling.health import readiness_check_add
        from polls import signals  # noqa: F401 - connects the receivers
        from polls.kafka.health import check_kafka, kafka_configured

        readiness_check_add("kafka", check_kafka, configured=kafka_configured)
