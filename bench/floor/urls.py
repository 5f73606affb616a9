"""The product's URLs plus /bench/floor/...: never included by polling.urls."""

from django.urls import include, path

from bench.floor.views import FloorLeaderboardApi, FloorVoteApi
from polling.urls import handler404, handler500  # noqa: F401 - the same error handlers
from polling.urls import urlpatterns as product_urlpatterns

urlpatterns = [
    path("bench/floor/polls/<int:poll_id>/vote", FloorVoteApi.as_view(), name="floor-vote"),
    path("bench/floor/leaderboard", FloorLeaderboardApi.as_view(), name="floor-leaderboard"),
    path("", include(product_urlpatterns)),
]
