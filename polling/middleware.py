from django.conf import settings
from django.db import connections
from django.http import JsonResponse
from django.middleware.security import SecurityMiddleware
from django.utils.http import parse_header_parameters

from polling.asgi_limits import too_large_detail
from polling.strict import TOO_DEEP, json_too_deep


class BodySizeLimitMiddleware:
    """Answer 413 to a request whose declared body exceeds API_MAX_BODY_BYTES, 411 to one
    sent chunked. Under ASGI, polling.asgi_limits refuses a body past its limit before
    it is received whole; under a WSGI server (polling.wsgi) this check is the only one.

    DRF's parsers read the body as a stream and so bypass Django's
    DATA_UPLOAD_MAX_MEMORY_SIZE; this check runs before any of it is parsed. Django and
    DRF read a body only up to its Content-Length, so a chunked one (none declared)
    would be read as empty and refused for a missing field.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith("/admin/"):
            # Admin forms and bulk actions are staff-only and legitimately larger.
            return self.get_response(request)
        limit = settings.API_MAX_BODY_BYTES
        if "CONTENT_LENGTH" not in request.META and request.META.get("HTTP_TRANSFER_ENCODING"):
            return JsonResponse(
                {"detail": "Send the body with a Content-Length header: a chunked body is not read."}, status=411
            )
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse({"detail": "Content-Length is not a number."}, status=400)
        if length > limit:
            return JsonResponse({"detail": too_large_detail(limit, length)}, status=413)
        return self.get_response(request)


class JSONDepthMiddleware:
    """Answer 400 to a JSON body nested deeper than polling.strict.JSON_MAX_DEPTH, on every
    endpoint, before any view reads it: Python's parser recurses per level and a deep
    enough body was a RecursionError (500). After BodySizeLimitMiddleware, so the body
    read here is within API_MAX_BODY_BYTES.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        media_type, _ = parse_header_parameters(request.META.get("CONTENT_TYPE", ""))
        is_json = media_type == "application/json" or media_type.endswith("+json")
        if is_json and request.META.get("CONTENT_LENGTH") not in (None, "", "0") and json_too_deep(request.body):
            return JsonResponse({"detail": TOO_DEEP}, status=400)
        return self.get_response(request)


class ReleaseDatabaseConnectionMiddleware:
    """Give the request's database connection back to the pool when its view returns.

    Django returns it on request_finished, which under ASGI never fires for a request
    whose client went away mid-view (Django cancels the request, the sync view's thread
    still finishes). Each such request kept a pooled connection forever: 16 client
    timeouts during a Kafka outage exhausted the pool and every later vote got 503
    (found by tests/faults). Listed last, this runs in the view's own thread: under
    ASGI the whole chain runs in the request's thread (polling.handlers), so it runs
    there even when the request was cancelled meanwhile.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            return self.get_response(request)
        finally:
            for connection in connections.all(initialized_only=True):
                # Inside an atomic block (ATOMIC_REQUESTS, a test's transaction) the
                # connection is still in use: leave it to whoever opened the block.
                if not connection.in_atomic_block:
                    connection.close_if_unusable_or_obsolete()


class SecurityHeadersMiddleware(SecurityMiddleware):
    """Security headers on every response: Django's (nosniff, Referrer-Policy, COOP, HSTS
    over HTTPS), X-Frame-Options, and the Content-Security-Policy of CONTENT_SECURITY_POLICY.

    Listed first, so that the probes and /metrics, answered ahead of the rest of the
    chain, get them too. Django's SecurityMiddleware stays after the probes for the
    HTTPS redirect (a probe over plain HTTP must not be redirected), and
    XFrameOptionsMiddleware for its exemptions (and `check --deploy`). A view that sets
    its own Content-Security-Policy or X-Frame-Options header keeps it.
    """

    def __init__(self, get_response):
        super().__init__(get_response)
        self.frame_options = settings.X_FRAME_OPTIONS
        self.content_security_policy = "; ".join(
            " ".join([directive, *sources]) for directive, sources in settings.CONTENT_SECURITY_POLICY.items()
        )

    def process_request(self, request):
        return None

    def process_response(self, request, response):
        response = super().process_response(request, response)
        if not getattr(response, "xframe_options_exempt", False):
            response.headers.setdefault("X-Frame-Options", self.frame_options)
        response.headers.setdefault("Content-Security-Policy", self.content_security_policy)
        return response
