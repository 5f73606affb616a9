"""Per-process fan-out: one channel-layer subscription per group, written to local sockets.

Channels' own way gives every WebSocket consumer its channel and group membership: with
the pub/sub layer each viewer is a Redis SUBSCRIBE on connect, and each broadcast is
put into every viewer's queue, wakes every viewer's task, is decoded (msgpack) once per
viewer and goes through the session middleware and the server's WebSocket protocol,
framed again for every viewer. With thousands of viewers of one poll, that was nearly
all of a server process's time.

Here a process holds one channel of the layer per group its viewers watch (so one Redis
subscription per poll per process, whatever the audience), and a task per group that
receives each message once and hands it to every local viewer in a plain loop
(`Audience`). A broadcast's client JSON is encoded once by the broadcaster; its
WebSocket frame is built once here (`text_frame`), and on uvicorn written straight to
each socket's transport (polling.patches.uvicorn_websockets.socket_writer). Anywhere else (daphne's runserver, the test
communicator) a viewer sends through its ordinary ASGI `send`.

Messages that arrive while a group is being written, or resting, wait folded (`_fold`):
a poll's update carries its full totals, so only the newest counts. A group rests after
each write in proportion to the CPU the write cost the loop's thread (`cpu_share`), so a
large audience gets fewer, fresher updates and leaves the process to its other work;
with the ordinary `send`, only the hand-over to each viewer's task is counted.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
import time
from typing import Any, Protocol

from realtime.events import LEADERBOARD_UPDATED, POLL_REMOVED, POLL_UPDATED

logger = logging.getLogger(__name__)

# A broadcast is written to the viewers in slices of up to this long, the loop serving
# what else is ready (HTTP requests, votes waiting to answer 204) between two. Each turn
# given back costs more than it seems on a process saturated with votes, so slices are
# long rather than frequent (docs/decisions/0011-websocket-fanout.md).
_SLICE_SECONDS = 0.02
# Viewers written between two looks at the clock.
_CHUNK = 32
# The longest a group rests between two writes, whatever its audience costs: viewers of
# the largest audience still get an update a second.
_LONGEST_REST = 1.0
# Tells apart pending messages that are never folded.
_arrivals = itertools.count()
# How often a watched group is joined again. The core and in-memory layers forget a
# membership after a day (group_expiry); a viewer's own membership used to be as old
# as its connection, the process's is as old as the first viewer's.
_REJOIN_SECONDS = 3600.0


class Viewer(Protocol):
    def deliver(self, event: dict[str, Any]) -> None:
        """Take one group message; must not block (it runs inside the fan-out loop)."""


class _Group:
    def __init__(self, name: str) -> None:
        self.name = name
        self.viewers: set[Viewer] = set()
        self.channel: str | None = None
        self.opened: asyncio.Task | None = None
        self.pump: asyncio.Task | None = None
        self.writer: asyncio.Task | None = None
        self.rejoin: asyncio.Task | None = None
        # Messages received and not yet written, folded (see _fold); the writer's cue.
        self.pending: dict[tuple, dict[str, Any]] = {}
        self.arrived = asyncio.Event()
        # The loop's time before which the group is not written again (its CPU share).
        self.next_write = 0.0


class Audience:
    """This process's viewers of each group, fed by one channel of the layer per group.

    Lives on one event loop (the server's) with one channel layer; see `audience()`.
    cpu_share: the fraction of the loop thread's time that writing one group may take,
    measured as the thread's CPU time per write; 0 for no limit.
    """

    def __init__(self, layer, *, cpu_share: float = 0.0) -> None:
        self.layer = layer
        self.cpu_share = cpu_share
        self.loop = asyncio.get_running_loop()
        self._groups: dict[str, _Group] = {}

    async def join(self, group: str, viewer: Viewer) -> None:
        """Add the viewer; returns once the layer delivers the group's messages here.

        So a read started after join() returns cannot miss a broadcast the viewer will
        not get. Raises what subscribing raised (Redis down), the viewer then not added.
        """
        entry = self._groups.get(group)
        if entry is None:
            entry = self._groups[group] = _Group(group)
            entry.opened = self.loop.create_task(self._open(entry))
        entry.viewers.add(viewer)
        try:
            await asyncio.shield(entry.opened)
        except BaseException:
            self.leave(group, viewer)
            raise

    def leave(self, group: str, viewer: Viewer) -> None:
        """Remove the viewer; the last one out unsubscribes (in the background)."""
        entry = self._groups.get(group)
        if entry is None or viewer not in entry.viewers:
            return
        entry.viewers.discard(viewer)
        if not entry.viewers:
            del self._groups[group]
            self.loop.create_task(self._close(entry))

    def viewers(self, group: str) -> int:
        entry = self._groups.get(group)
        return 0 if entry is None else len(entry.viewers)

    async def _open(self, entry: _Group) -> None:
        try:
            entry.channel = await self.layer.new_channel()
            await self.layer.group_add(entry.name, entry.channel)
        except BaseException:
            if self._groups.get(entry.name) is entry:
                del self._groups[entry.name]
            raise
        entry.pump = self.loop.create_task(self._pump(entry))
        entry.writer = self.loop.create_task(self._write(entry))
        entry.rejoin = self.loop.create_task(self._rejoin(entry))

    async def _rejoin(self, entry: _Group) -> None:
        while True:
            await asyncio.sleep(_REJOIN_SECONDS)
            try:
                await self.layer.group_add(entry.name, entry.channel)
            except Exception as exc:  # noqa: BLE001 - tried again in an hour; the pub/sub layer needs none
                logger.warning("fan-out: joining %s again failed: %r", entry.name, exc)

    async def _close(self, entry: _Group) -> None:
        try:
            await entry.opened
        except BaseException:  # noqa: BLE001 - it never subscribed: nothing to undo
            return
        if entry.rejoin is not None:
            entry.rejoin.cancel()
        if entry.pump is not None:
            # Cancelling the receive also unsubscribes the channel (channels_redis).
            entry.pump.cancel()
        if entry.writer is not None:
            entry.writer.cancel()
        try:
            await self.layer.group_discard(entry.name, entry.channel)
        except Exception as exc:  # noqa: BLE001 - a layer that lost Redis forgets the group anyway
            logger.warning("fan-out: leaving %s failed: %r", entry.name, exc)

    async def _pump(self, entry: _Group) -> None:
        """Receive the group's messages into its pending ones, folded; the writer sends them."""
        while True:
            try:
                event = await self.layer.receive(entry.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the layer reconnects; keep listening
                logger.warning("fan-out: receiving for %s failed: %r", entry.name, exc)
                await asyncio.sleep(1.0)
                continue
            _fold(entry.pending, event)
            entry.arrived.set()

    async def _write(self, entry: _Group) -> None:
        """Write what is pending to every viewer, then rest as long as the CPU share asks."""
        while True:
            await entry.arrived.wait()
            rest = entry.next_write - self.loop.time()
            if rest > 0:
                await asyncio.sleep(rest)
            entry.arrived.clear()
            events = list(entry.pending.values())
            entry.pending.clear()
            began = self.loop.time()
            cpu = await self._deliver(entry, events)
            if self.cpu_share:
                entry.next_write = began + min(cpu / self.cpu_share, _LONGEST_REST)

    async def _deliver(self, entry: _Group, events: list[dict[str, Any]]) -> float:
        """Hand the events to every viewer, in slices; returns the thread's CPU seconds spent."""
        viewers = list(entry.viewers)
        spent = 0.0
        slice_began, slice_cpu = time.monotonic(), time.thread_time()
        for start in range(0, len(viewers), _CHUNK):
            if start and time.monotonic() - slice_began > _SLICE_SECONDS:
                spent += time.thread_time() - slice_cpu
                await asyncio.sleep(0)
                slice_began, slice_cpu = time.monotonic(), time.thread_time()
            for viewer in viewers[start : start + _CHUNK]:
                for event in events:
                    try:
                        viewer.deliver(event)
                    except Exception:  # one broken viewer must not starve the others
                        logger.exception("fan-out: delivering to a viewer of %s failed", entry.name)
        return spent + time.thread_time() - slice_cpu


def _fold(pending: dict[tuple, dict[str, Any]], event: dict[str, Any]) -> None:
    """Add a group message to those not yet written, replacing what it makes stale.

    A poll's update carries its full totals, so only the highest version of each poll
    is kept, and the leaderboard's latest; a poll's removal drops its pending update
    (an update after it, the poll shown again, queues behind it). Anything else is kept,
    in order.
    """
    kind, poll_id, version = event.get("type"), event.get("poll_id"), event.get("version")
    if kind == POLL_UPDATED and poll_id is not None and version is not None:
        key = (kind, poll_id)
        held = pending.get(key)
        if held is None or held["version"] <= version:
            pending[key] = event
    elif kind == LEADERBOARD_UPDATED:
        pending[(kind,)] = event
    else:
        if kind == POLL_REMOVED:
            pending.pop((POLL_UPDATED, poll_id), None)
        pending[(kind, next(_arrivals))] = event


_audiences: dict[asyncio.AbstractEventLoop, Audience] = {}


def audience() -> Audience:
    """The running loop's audience over the current default channel layer.

    A server process has one loop and one layer for its life; tests build new loops
    and layers, and get a new audience for each.
    """
    from channels.layers import get_channel_layer
    from django.conf import settings

    loop = asyncio.get_running_loop()
    layer = get_channel_layer()
    current = _audiences.get(loop)
    if current is None or current.layer is not layer:
        for stale in [other for other in _audiences if other.is_closed()]:
            del _audiences[stale]
        current = _audiences[loop] = Audience(layer, cpu_share=settings.WS_FANOUT_CPU_SHARE)
    return current


# --- writing frames ------------------------------------------------------------------------


def text_frame(text: str) -> bytes:
    """A complete, unmasked WebSocket text frame (what a server sends) carrying text."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload
