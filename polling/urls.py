from django.contrib import admin
from django.urls import include, path

from polling.views import not_found, server_error

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("polls.urls")),
    path("", include("leaderboard.urls")),
    path("", include("realtime.urls")),
]

handler404 = not_found
handler500 = server_error
