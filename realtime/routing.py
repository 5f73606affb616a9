from django.urls import path, re_path

from realtime.consumers import NotFoundConsumer, PollConsumer, PollsConsumer

websocket_urlpatterns = [
    # The seed's endpoint, with or without a trailing slash: a WebSocket is never redirected.
    re_path(r"^ws/?$", PollsConsumer.as_asgi()),
    # Any text as the id: the consumer answers a bad one with 4404 instead of the router
    # raising "No route found".
    path("ws/polls/<str:poll_id>", PollConsumer.as_asgi()),
    re_path(r"", NotFoundConsumer.as_asgi()),
]
