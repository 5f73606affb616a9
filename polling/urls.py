from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from polling.views import not_found, server_error

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("polls.urls")),
    path("", include("leaderboard.urls")),
    path("", include("realtime.urls")),
    path("", include("polling.ops_urls")),  # /healthz, /readyz, /metrics
    path("api/schema", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's initializer as a script of its own (no inline script).
    path(
        "api/docs",
        SpectacularSwaggerSplitView.as_view(url_name="schema", template_name="polling/swagger_ui.html"),
        name="api-docs",
    ),
]

handler404 = not_found
handler500 = server_error
