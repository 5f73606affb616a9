from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from polling.views import not_found, server_error

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("polls.urls")),
    path("", include("leaderboard.urls")),
    path("", include("realtime.urls")),
    path("", include("polling.ops_urls")),  # /healthz, /readyz, /metrics
    path("api/schema", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
]

handler404 = not_found
handler500 = server_error
