"""Test-only URLs: a sync view that holds a database connection until the test lets it go."""

import threading

from django.db import connections
from django.http import HttpResponse
from django.urls import include, path


class HeldView:
    """Opens a connection in its own thread, then waits for `proceed` before answering."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.opened = threading.Event()
        self.proceed = threading.Event()
        self.returned = threading.Event()
        self.connection = None
        self.thread = None

    def __call__(self, request):
        connection = connections["default"]
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        self.connection = connection
        self.thread = threading.get_ident()
        self.opened.set()
        self.proceed.wait(30)
        self.returned.set()
        return HttpResponse("done")


held_view = HeldView()

urlpatterns = [
    path("test/held", held_view),
    path("", include("polling.urls")),
]
