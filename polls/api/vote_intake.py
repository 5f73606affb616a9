"""The lean path of `POST /polls/{id}/vote`: an ASGI application routed ahead of Django.

The vote is the one request that carries the load. Here it is answered on the event
loop with the functions every other way of voting uses (polls.domain.ballots reads the body,
polls.domain.services casts the ballot, polls.api.throttles decides the rate limits in process,
polling.exception_handler.error_answer maps errors to answers), without Django's
request handling, middleware chain, DRF view or a thread per request. Its answers are
those of the DRF view (polls.api.apis.PollVoteApi) with the project's middleware: the same
statuses, bodies and headers.

A vote that needs what only the full stack has goes there instead, before its body is
read: a signed-in user (an Authorization header or a session cookie), a Host header
that ALLOWED_HOSTS refuses, a redirect to HTTPS, an Accept header that JSON does not
satisfy or asks for indentation, a `format` query parameter, a script prefix.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse
from django.http.cookie import parse_cookie
from rest_framework.exceptions import Throttled
from rest_framework.utils.mediatypes import media_type_matches

from polling.asgi_limits import BodySizeLimit
from polling.exception_handler import error_answer
from polling.metrics import request_observed, vote_accepted
from polling.middleware import SecurityHeadersMiddleware
from polling.strict import TOO_DEEP, json_too_deep
from polling.throttles import throttles_wait_for_cache
from polls.api.metrics import vote_refused
from polls.api.throttles import vote_throttles_check
from polls.domain.ballots import ballot_read, idempotency_key
from polls.domain.services import in_vote_thread, vote_cast_async
from polls.domain.voters import COOKIE_NAME, voter_cookie_set, voter_cookie_token, voter_for_vote, voter_from_request

logger = logging.getLogger(__name__)

# The path of polls.urls' poll-vote (its IdConverter: up to 18 digits; longer is Django's 404).
_VOTE_PATH = re.compile(r"/polls/([0-9]{1,18})/vote")
VIEW_NAME = "poll-vote"
# What DRF's APIView adds to every answer of the view, and SessionMiddleware to each that
# read the request's user (all of them, for an anonymous voter).
_VIEW_HEADERS = [(b"allow", b"POST, OPTIONS"), (b"vary", b"Cookie")]
_JSON = (b"content-type", b"application/json")


class VoteIntake:
    """ASGI application: `POST /polls/<id>/vote` answered here, every other request by `app`."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            match = _VOTE_PATH.fullmatch(scope["path"])
            if match:
                request = VoteRequest(scope)
                if not _needs_django(request):
                    # A body past its limit is refused as Django's are (polling.asgi_limits).
                    await BodySizeLimit(functools.partial(_vote, request, int(match[1])))(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class VoteRequest(HttpRequest):
    """The request as Django would see it (META, cookies, host, scheme), with no body or
    handler: what voter_from_request, the throttles and the host check read."""

    # HttpRequest.__init__ is not called: its query and form dictionaries are never read here.
    GET = POST = FILES = None
    resolver_match = content_type = content_params = None

    def __init__(self, scope) -> None:
        self.scope = scope
        self.method = "POST"
        self.path = self.path_info = scope["path"]
        meta = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": self.path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": scope.get("query_string", b"").decode("latin1"),
        }
        if scope.get("client"):
            meta["REMOTE_ADDR"] = meta["REMOTE_HOST"] = scope["client"][0]
        server = scope.get("server") or ("unknown", "0")
        meta["SERVER_NAME"], meta["SERVER_PORT"] = server[0], str(server[1])
        headers: dict[str, list[str]] = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin1")
            if "_" in name:  # as Django: no spoofing through underscores and hyphens
                continue
            if name == "content-length":
                key = "CONTENT_LENGTH"
            elif name == "content-type":
                key = "CONTENT_TYPE"
            else:
                key = "HTTP_" + name.upper().replace("-", "_")
            headers.setdefault(key, []).append(raw_value.decode("latin1"))
        meta.update({key: ",".join(values) for key, values in headers.items()})
        self.META = meta
        self.COOKIES = parse_cookie(meta.get("HTTP_COOKIE", ""))

    def _get_scheme(self) -> str:
        return self.scope.get("scheme") or "http"


def _needs_django(request: VoteRequest) -> bool:
    meta = request.META
    if "HTTP_AUTHORIZATION" in meta or settings.SESSION_COOKIE_NAME in request.COOKIES:
        return True  # authentication, and CSRF for a session, are the full stack's
    if settings.DISALLOWED_USER_AGENTS or "format" in meta["QUERY_STRING"]:
        return True
    try:
        request.get_host()
    except DisallowedHost:
        return True
    if settings.SECURE_SSL_REDIRECT and not request.is_secure():
        return True
    accept = meta.get("HTTP_ACCEPT")
    return bool(accept) and (
        "indent" in accept
        or not any(media_type_matches("application/json", item.strip()) for item in accept.split(","))
    )


async def _vote(request: VoteRequest, poll_id: int, scope, receive, send) -> None:
    started = time.perf_counter()
    try:
        status, body, headers = await _answer(request, poll_id, receive)
    except ConnectionResetError:
        return  # nothing was cast, and there is no one to answer
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
    request_observed(
        view=VIEW_NAME, method="POST", path=request.path, status=status, seconds=time.perf_counter() - started
    )


async def _answer(request: VoteRequest, poll_id: int, receive) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    # Read first, as Django's handler does (BodySizeLimit refuses a body past its limit),
    # then the answers of polling.middleware's BodySizeLimitMiddleware and
    # JSONDepthMiddleware, which come before the view.
    body = await _read_body(receive)
    meta = request.META
    if "CONTENT_LENGTH" not in meta and meta.get("HTTP_TRANSFER_ENCODING"):
        return _plain(request, 411, "Send the body with a Content-Length header: a chunked body is not read.")
    try:
        int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return _plain(request, 400, "Content-Length is not a number.")
    media_type = meta.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
    if (media_type == "application/json" or media_type.endswith("+json")) and body and json_too_deep(body):
        return _plain(request, 400, TOO_DEEP)

    new_token = None
    try:
        if throttles_wait_for_cache():
            wait = await in_vote_thread(vote_throttles_check)(request)
        else:
            wait = vote_throttles_check(request)
        if wait is not None:
            raise Throttled(wait)
        ballot = ballot_read(body=body, content_type=meta.get("CONTENT_TYPE", ""), poll_id=poll_id)
        voter, new_token = voter_for_vote(voter_from_request(request))
        key = idempotency_key(header=meta.get("HTTP_IDEMPOTENCY_KEY"), ballot=ballot)
        event = await vote_cast_async(poll_id=poll_id, options=ballot.options, voter=voter, idempotency_key=key)
    except Exception as exc:
        answer = error_answer(exc)
        if answer is None:
            logger.exception("vote on poll %s failed", poll_id)
            return _plain(request, 500, "Internal server error.")
        vote_refused(exc)
        status, data, extra = answer
        headers = [
            *_common_headers(request),
            _JSON,
            *((k.lower().encode(), v.encode("latin1")) for k, v in extra.items()),
        ]
        return status, _render(data), headers
    vote_accepted()
    headers = _common_headers(request)
    if new_token is not None:
        headers = [*headers, _cookie_header(voter_cookie_token(event, new_token))]
    return 204, b"", headers


async def _read_body(receive) -> bytes:
    """The request's body (BodySizeLimit's receive raises once it passes the limit)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("the client went away before sending its vote")
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _plain(request: VoteRequest, status: int, detail: str) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """An answer of a middleware before the view (a JsonResponse): no view headers."""
    return status, json.dumps({"detail": detail}).encode(), [_JSON, *_security_headers_for(request)]


def _render(data) -> bytes:
    """As DRF's JSONRenderer renders it: compact, UTF-8, line separators escaped."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode()


def _cookie_header(signed_token: str) -> tuple[bytes, bytes]:
    """The Set-Cookie header voter_cookie_set writes, its attributes made once a second."""
    global _cookie_attributes
    now = int(time.time())
    if _cookie_attributes[0] != now:
        response = HttpResponse()
        voter_cookie_set(response, "-")
        (morsel,) = response.cookies.values()
        _cookie_attributes = (now, morsel.OutputString().partition(";")[2])
    # A signed token needs no quoting in a cookie (base64url and ":").
    return b"set-cookie", f"{COOKIE_NAME}={signed_token};{_cookie_attributes[1]}".encode("ascii")


_cookie_attributes: tuple[int, str] = (0, "")


_security_headers: dict[bool, list[tuple[bytes, bytes]]] = {}


def _security_headers_for(request: VoteRequest) -> list[tuple[bytes, bytes]]:
    """The headers polling.middleware.SecurityHeadersMiddleware adds to every answer,
    made by that middleware itself, once per scheme."""
    secure = request.is_secure()
    headers = _security_headers.get(secure)
    if headers is None:
        response = HttpResponse()
        del response["Content-Type"]
        response = SecurityHeadersMiddleware(lambda request: response).process_response(request, response)
        headers = _security_headers[secure] = [
            (name.lower().encode(), value.encode("latin1")) for name, value in response.items()
        ]
    return headers


def _common_headers(request: VoteRequest) -> list[tuple[bytes, bytes]]:
    """The view's headers and the security headers."""
    return [*_VIEW_HEADERS, *_security_headers_for(request)]


def _forget_headers(**kwargs) -> None:
    global _cookie_attributes
    _security_headers.clear()
    _cookie_attributes = (0, "")


setting_changed.connect(_forget_headers)
