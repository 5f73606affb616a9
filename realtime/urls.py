from django.urls import re_path

from realtime.views import poll_live

urlpatterns = [
    # Ids up to 18 digits, as polls.urls: a longer number is a 404, not a database error.
    re_path(r"^polls/(?P<poll_id>[0-9]{1,18})/live$", poll_live, name="poll-live"),
]
