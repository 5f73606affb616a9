"""WebSocket consumers: ws/polls/<id> (one poll) and ws (every poll).

Thin by design: check the request, join the group, accept, send the snapshot; after
that they only forward what the broadcaster published. Group messages reach them through
this process's Audience (realtime.fanout), one channel-layer subscription per poll per
process, rather than through a channel of their own. Close codes:

    1013  this server process has WS_MAX_CONNECTIONS open already: try again later
    4400  the client kept sending messages it was told were wrong
    4404  no such poll, or no such WebSocket path
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

from autobahn.exception import Disconnected
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from polling.patches.uvicorn_websockets import socket_writer
from polling.strict import JSONTooDeep, json_loads
from polls.domain.live import poll_live_totals, viewer_sees_results
from realtime.broadcast import get_broadcaster
from realtime.events import (
    LEADERBOARD_UPDATED,
    POLL_REMOVED,
    POLL_SNAPSHOT,
    POLL_UPDATED,
    POLLS_GROUP,
    POLLS_SNAPSHOT,
    PONG,
    error_message,
    poll_group,
    poll_message,
    poll_results_group,
)
from realtime.fanout import Audience, audience, text_frame
from realtime.selectors import polls_snapshot
from realtime.voters import voter_from_scope

logger = logging.getLogger(__name__)

CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_BAD_MESSAGES = 4400
CLOSE_NOT_FOUND = 4404

# Wrong messages a client may send (each answered with an error) before it is closed.
_MAX_BAD_MESSAGES = 10
# The longest message read from a client: the only one it may send is a ping.
_MAX_MESSAGE_CHARS = 1024
_ONLY_PING = 'The only message a client may send is {"type": "ping"}.'
# Poll ids fit a 64-bit column; a longer number is "no such poll", not a database error.
_MAX_ID_DIGITS = 18
# What a send on a connection that is closing raises: ASGI asks servers for an OSError;
# daphne (manage.py runserver) lets autobahn's "Attempt to send on a closed protocol"
# through instead.
_CLOSED_SOCKET_ERRORS = (OSError, Disconnected)


class _ConnectionSlots:
    """Counts this process's open WebSocket connections against WS_MAX_CONNECTIONS.

    A plain counter suffices: every consumer of a server process runs on its one loop.
    """

    def __init__(self) -> None:
        self.open = 0

    def acquire(self) -> bool:
        if self.open >= settings.WS_MAX_CONNECTIONS:
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1


connection_slots = _ConnectionSlots()


class _SnapshotLoader:
    """Shares one database read among the viewers of a poll that connect together.

    When a server restarts, thousands of viewers reconnect within a second; one query each
    would queue on the single database thread for many seconds. Viewers that ask while
    no read of their key has started yet share the next read. A viewer that asks while
    a read is running waits for the one after it: that read started before the viewer
    joined its group, so it might miss a broadcast the viewer did not get either.
    """

    def __init__(self) -> None:
        self._waiting: dict[Any, asyncio.Future] = {}
        self._running: dict[Any, asyncio.Task] = {}

    async def get(self, key: Any, read: Callable[[], Any]) -> Any:
        loop = asyncio.get_running_loop()
        batch = self._waiting.get(key)
        if batch is None or batch.get_loop() is not loop:
            batch = loop.create_future()
            self._waiting[key] = batch
            loop.create_task(self._load(key, batch, read))
        return await asyncio.shield(batch)

    async def _load(self, key: Any, batch: asyncio.Future, read: Callable[[], Any]) -> None:
        running = self._running.get(key)
        if running is not None and not running.done() and running.get_loop() is asyncio.get_running_loop():
            await asyncio.wait([running])
        if self._waiting.get(key) is batch:
            del self._waiting[key]
        me = asyncio.current_task()
        self._running[key] = me
        try:
            batch.set_result(await database_sync_to_async(read)())
        except Exception as exc:  # noqa: BLE001 - handed to every waiter, raised there
            batch.set_exception(exc)
            # Retrieved here: if every waiter left meanwhile, asyncio would warn that
            # the exception was never retrieved.
            batch.exception()
        finally:
            if self._running.get(key) is me:
                del self._running[key]


snapshots = _SnapshotLoader()


def _viewer_sees_results(live, scope) -> bool:
    return viewer_sees_results(totals=live, voter=voter_from_scope(scope))


class _LiveConsumer(AsyncJsonWebsocketConsumer):
    """What both endpoints share: the connection cap, client messages, group messages."""

    # No channel of its own in the layer (with the pub/sub layer that was a Redis
    # SUBSCRIBE per viewer): group messages come through the process's Audience.
    channel_layer_alias = None
    holds_slot = False
    bad_messages = 0
    # Set once the server closed the socket, or a send found it closing: nothing more is
    # answered, whatever the client's frames still queued here say.
    closing = False
    # Highest version sent per poll on this connection: an update below it is stale.
    versions: dict[int, int]

    async def connect(self) -> None:
        self.versions = {}
        self.watching: list[str] = []
        # Group messages that arrive before the snapshot went out wait here, then pass
        # the version check against it (as they waited in the consumer's queue before).
        self.held: list[dict[str, Any]] | None = []
        self.write_frame = None
        self.last_send: asyncio.Task | None = None
        if not connection_slots.acquire():
            # Accepted only to say why: a refused handshake gives the client no reason.
            await self.accept()
            await self.send_json(
                error_message(code="too_many_connections", message="This server is full; try again later.")
            )
            await self.close(code=CLOSE_TRY_AGAIN_LATER)
            return
        self.holds_slot = True
        broadcaster = get_broadcaster()
        broadcaster.attach_event_loop(asyncio.get_running_loop())
        if not settings.KAFKA_BROKERS:
            # The embedded mode has no worker to tell viewers of passing deadlines: this
            # process does, once it has viewers (its in-memory layer reaches only them).
            broadcaster.watch_deadlines()
        self.audience: Audience = audience()
        await self.join()

    async def join(self) -> None:
        raise NotImplementedError

    async def watch(self, group: str) -> None:
        """Receive the group's messages from now on (returns once they are routed here)."""
        await self.audience.join(group, self)
        self.watching.append(group)

    def unwatch(self, group: str) -> None:
        self.audience.leave(group, self)
        self.watching.remove(group)

    async def go_live(self, snapshot: dict[str, Any]) -> None:
        """Send the snapshot, then the group messages held back meanwhile, if newer."""
        await self.send_json(snapshot)
        self.write_frame = socket_writer(self.server_send) if settings.WS_DIRECT_WRITE else None
        held, self.held = self.held, None
        for event in held or ():
            self.deliver(event)

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels (4.2+) first hops to the sync thread to close stale database
        # connections before every handler. These handlers touch the database only
        # through database_sync_to_async, which does that itself; with thousands of
        # viewers connecting, one hop each through the single sync thread adds up.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def __call__(self, scope, receive, send) -> None:
        self.server_send = send  # the server's own, which socket_writer recognises

        async def send_unless_closed(message: dict[str, Any]) -> None:
            # The client may close (or its frames may still be queued here) while we
            # answer: a send that finds the socket closing is dropped, not a traceback.
            if self.closing and message["type"] == "websocket.send":
                return
            try:
                await send(message)
            except _CLOSED_SOCKET_ERRORS as exc:
                self.closing = True
                logger.debug("websocket %s dropped, the connection is closing: %r", message["type"], exc)

        try:
            await super().__call__(scope, receive, send_unless_closed)
        finally:
            # Here rather than in disconnect(): a consumer that is cancelled or crashes
            # never gets there, and its slot would be lost for the life of the process.
            for group in getattr(self, "watching", ()):
                self.audience.leave(group, self)
            self.watching = []
            if self.holds_slot:
                self.holds_slot = False
                connection_slots.release()

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        self.closing = True
        await super().close(code=code, reason=reason)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # Replaces the JSON consumer's receive, which raises on malformed JSON.
        if self.closing:
            return  # frames the client sent before it saw our close
        if text_data is None:
            await self._refuse("binary_not_supported", "Send JSON text frames, not binary ones.")
            return
        if len(text_data) > _MAX_MESSAGE_CHARS:  # not a ping: refused unread
            await self._refuse("unknown_message", f"{_ONLY_PING} This one has over {_MAX_MESSAGE_CHARS} characters.")
            return
        try:
            content = json_loads(text_data)
        except JSONTooDeep as exc:
            await self._refuse("invalid_json", str(exc))
            return
        except ValueError:
            await self._refuse("invalid_json", "That message is not JSON.")
            return
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": PONG})
        else:
            await self._refuse("unknown_message", _ONLY_PING)

    async def _refuse(self, code: str, message: str) -> None:
        self.bad_messages += 1
        await self.send_json(error_message(code=code, message=message))
        if self.bad_messages >= _MAX_BAD_MESSAGES:
            await self.close(code=CLOSE_BAD_MESSAGES)

    async def _not_found(self, message: str) -> None:
        await self.accept()
        await self.send_json(error_message(code="not_found", message=message))
        await self.close(code=CLOSE_NOT_FOUND)

    def _is_newer(self, poll_id: int, version: int) -> bool:
        # Equal passes: a moderator's close or reopen changes the status, not the version.
        if version < self.versions.get(poll_id, -1):
            return False
        self.versions[poll_id] = version
        return True

    # -- group messages (from realtime.fanout.Audience) ---------------------------------
    # The broadcaster encodes each event's client JSON once for every viewer (see
    # realtime.events), and the audience its WebSocket frame once per process.

    def deliver(self, event: dict[str, Any]) -> None:
        """One group message, called by the audience for each viewer in turn: never blocks."""
        if self.held is not None:
            self.held.append(event)
            return
        kind = event["type"]
        if kind == POLL_UPDATED:
            if self._is_newer(event["poll_id"], event["version"]):
                self._forward(event)
        elif kind == POLL_REMOVED:
            self._removed(event)
        elif kind == LEADERBOARD_UPDATED:
            self._leaderboard(event)

    def _removed(self, event: dict[str, Any]) -> None:
        self._forward(event)

    def _leaderboard(self, event: dict[str, Any]) -> None:
        self._forward(event)

    def _forward(self, event: dict[str, Any]) -> None:
        if self.write_frame is not None:
            frame = event.get("frame")
            if frame is None:
                frame = event["frame"] = text_frame(event["text"])
            self.write_frame(frame)  # False: the socket is closing, nothing more to say
            return
        self._send_later(functools.partial(self.send, text_data=event["text"]))

    def _send_later(self, send: Callable[[], Any]) -> None:
        """Send through the ordinary ASGI path, in order, without holding up the fan-out."""
        previous = self.last_send

        async def send_after_previous() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            try:
                await send()
            except Exception as exc:  # noqa: BLE001 - the socket went away meanwhile
                logger.debug("websocket send dropped: %r", exc)

        self.last_send = asyncio.get_running_loop().create_task(send_after_previous())


class PollConsumer(_LiveConsumer):
    """ws/polls/<poll_id>: a poll.snapshot, then that poll's poll.updated events."""

    async def join(self) -> None:
        raw_id: str = self.scope["url_route"]["kwargs"]["poll_id"]
        if not (raw_id.isascii() and raw_id.isdigit() and len(raw_id) <= _MAX_ID_DIGITS):
            await self._not_found(f"No poll with id {raw_id!r}.")
            return
        poll_id = int(raw_id)
        # Joined before the snapshot is read, so no update can fall between the two; the
        # group is settled once the viewer's right to see the counts is known.
        group = poll_group(poll_id)
        await self.watch(group)
        live = await snapshots.get(("poll", poll_id), lambda: poll_live_totals(poll_id=poll_id))
        snapshot = None if live is None else live.public
        if (
            live is not None
            and live.full is not None
            and await database_sync_to_async(_viewer_sees_results)(live, self.scope)
        ):
            await self.watch(poll_results_group(poll_id))
            self.unwatch(group)
            self.held = []  # what the public group sent meanwhile has no counts
            # Read again after joining the results group, for the same reason as above.
            live = await snapshots.get(("poll", poll_id), lambda: poll_live_totals(poll_id=poll_id))
            snapshot = None if live is None else (live.full or live.public)
        if snapshot is None:
            for joined in list(self.watching):
                self.unwatch(joined)
            await self._not_found(f"No poll with id {poll_id}.")
            return
        await self.accept()
        self.versions[poll_id] = snapshot["version"]
        await self.go_live(poll_message(event_type=POLL_SNAPSHOT, totals=snapshot))

    def _removed(self, event: dict[str, Any]) -> None:
        for group in list(self.watching):
            self.unwatch(group)  # nothing more for this socket
        self._send_later(functools.partial(self._say_removed, event["text"]))

    async def _say_removed(self, text: str) -> None:
        await self.send(text_data=text)
        await self.close(code=CLOSE_NOT_FOUND)

    def _leaderboard(self, event: dict[str, Any]) -> None:
        return None  # only the every-poll stream carries the leaderboard


class PollsConsumer(_LiveConsumer):
    """ws: a polls.snapshot, then poll.updated of every poll and leaderboard.updated."""

    async def join(self) -> None:
        await self.watch(POLLS_GROUP)
        snapshot = await snapshots.get("polls", polls_snapshot)
        await self.accept()
        for totals in snapshot["polls"]:
            self.versions[totals["id"]] = totals["version"]
        await self.go_live({"type": POLLS_SNAPSHOT, **snapshot})

    def _is_newer(self, poll_id: int, version: int) -> bool:
        # A viewer of every poll would otherwise keep a version for every poll it ever
        # saw; it is only filtered against its snapshot, and the client keeps the rest.
        known = self.versions.pop(poll_id, None)
        return known is None or version >= known


class NotFoundConsumer(_LiveConsumer):
    """Any other WebSocket path: a clear 4404 rather than a routing exception."""

    async def connect(self) -> None:
        await self._not_found(f"No WebSocket endpoint at {self.scope['path']}; use /ws or /ws/polls/<id>.")
