from django.urls import path, register_converter

from polls.apis import PollCreateApi, PollDetailApi, PollVoteApi


class IdConverter:
    """A positive id that fits a 64-bit column: a longer number is a 404, not a database error."""

    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(IdConverter, "id")

urlpatterns = [
    path("polls", PollCreateApi.as_view(), name="poll-create"),
    path("polls/<id:poll_id>", PollDetailApi.as_view(), name="poll-detail"),
    path("polls/<id:poll_id>/vote", PollVoteApi.as_view(), name="poll-vote"),
]
