from django.urls import path, register_converter

from polls.api.apis import PollDetailApi, PollExportApi, PollsApi, PollStatusApi, PollVoteApi, VoterTokenApi
from polls.api.pages import home, poll_present, poll_qr, poll_share, poll_vote_page
from polls.models import Poll


class IdConverter:
    """A positive id that fits a 64-bit column: a longer number is a 404, not a database error."""

    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(IdConverter, "id")

urlpatterns = [
    path("polls", PollsApi.as_view(), name="polls"),
    path("polls/<id:poll_id>", PollDetailApi.as_view(), name="poll-detail"),
    path("polls/<id:poll_id>/vote", PollVoteApi.as_view(), name="poll-vote"),
    path("polls/<id:poll_id>/close", PollStatusApi.as_view(status_to_set=Poll.Status.CLOSED), name="poll-close"),
    path("polls/<id:poll_id>/reopen", PollStatusApi.as_view(status_to_set=Poll.Status.OPEN), name="poll-reopen"),
    path("polls/<id:poll_id>/export.csv", PollExportApi.as_view(export_format="csv"), name="poll-export-csv"),
    path("polls/<id:poll_id>/export.json", PollExportApi.as_view(export_format="json"), name="poll-export-json"),
    path("voters", VoterTokenApi.as_view(), name="voters"),
    # The audience's pages (polls.api.pages): the short vote link is what the QR code holds.
    path("", home, name="home"),
    path("p/<id:poll_id>", poll_vote_page, name="poll-vote-page"),
    path("p/<id:poll_id>/share", poll_share, name="poll-share"),
    path("p/<id:poll_id>/present", poll_present, name="poll-present"),
    path("p/<id:poll_id>/qr.svg", poll_qr, name="poll-qr"),
]
