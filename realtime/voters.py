"""Who is watching: the voter behind a WebSocket, as polls.domain.voters finds it behind a request."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from django.contrib.auth import get_user

from polls.domain.voters import COOKIE_NAME, Voter, client_address_key, voter_token_read


def voter_from_scope(scope: dict[str, Any]) -> Voter:
    """The viewer's identity from the handshake: signed-in user, voter cookie, address.

    Synchronous (it may read the session): call it from database_sync_to_async. It is
    only asked for viewers of a poll that shows its counts to those who voted, which is
    why the ASGI stack loads no user for every connection (AuthMiddleware would, with a
    hop to the database thread each). Browsers cannot set headers on a WebSocket
    handshake, so unlike the API there is no X-Voter-Token: the voter cookie counts.
    """
    cookie = scope.get("cookies", {}).get(COOKIE_NAME)
    session = scope.get("session")
    # django.contrib.auth.get_user checks the session's auth hash, as for a request.
    user = get_user(SimpleNamespace(session=session)) if session is not None else None
    client = scope.get("client") or ("unknown", 0)
    return Voter(
        user_id=user.pk if user is not None and user.is_authenticated else None,
        token_id=voter_token_read(cookie) if cookie else None,
        address_key=client_address_key(client[0]),
    )
