"""Per-process fan-out: one layer subscription per poll, whatever the audience; frames."""

from __future__ import annotations

import asyncio
import struct
import time

import redis.asyncio as aioredis
from django.conf import settings

from polls.tests.factories import make_poll
from realtime.events import poll_group
from realtime.fanout import Audience, audience, text_frame
from realtime.tests.helpers import apply_votes, communicator, receive, receive_until, run


def _read_frame(frame: bytes) -> tuple[int, bool, bytes]:
    """(opcode, fin, payload) of one unmasked frame, checking its length field."""
    fin, opcode = frame[0] & 0x80, frame[0] & 0x0F
    assert not frame[1] & 0x80, "a server frame is never masked"
    length, header = frame[1] & 0x7F, 2
    if length == 126:
        length, header = struct.unpack_from("!H", frame, 2)[0], 4
    elif length == 127:
        length, header = struct.unpack_from("!Q", frame, 2)[0], 10
    assert len(frame) == header + length
    return opcode, bool(fin), frame[header:]


def test_a_text_frame_carries_the_utf8_text_whatever_its_length():
    for text in ["", "é" * 10, "x" * 125, "x" * 126, "ü" * 40_000, "y" * 70_000]:
        opcode, fin, payload = _read_frame(text_frame(text))
        assert (opcode, fin) == (0x1, True)
        assert payload.decode() == text


async def _subscribers(layer, group: str) -> int:
    client = aioredis.from_url(settings.REDIS_URL)
    try:
        [(_, count)] = await client.pubsub_numsub(layer._get_group_channel_name(group))
        return count
    finally:
        await client.aclose()


def test_viewers_of_a_poll_in_one_process_share_one_redis_subscription_and_all_get_updates(live):
    poll = make_poll()
    group = poll_group(poll.pk)

    async def scenario():
        comms = [communicator(f"/ws/polls/{poll.pk}") for _ in range(3)]
        for comm in comms:
            assert (await comm.connect())[0]
            await receive(comm)
        watching, subscribers = audience().viewers(group), await _subscribers(live, group)
        await apply_votes(poll, 2)
        updates = [(await receive_until(comm, lambda m: m["type"] == "poll.updated"))[-1] for comm in comms]
        for comm in comms:
            await comm.disconnect()
        # The last viewer out unsubscribes, in the background.
        for _ in range(100):
            if await _subscribers(live, group) == 0:
                break
            await asyncio.sleep(0.05)
        return watching, subscribers, updates, audience().viewers(group), await _subscribers(live, group)

    watching, subscribers, updates, watching_after, subscribers_after = run(scenario)
    assert (watching, subscribers) == (3, 1)
    assert [(u["option2"], u["version"]) for u in updates] == [(1, 1)] * 3
    assert (watching_after, subscribers_after) == (0, 0)


def _writes_and_turns(layer, group: str, viewers: int, seconds_each: float) -> list[str]:
    """From the first viewer written to the last: each viewer written, and each turn the loop gave other work."""
    order: list[str] = []
    written = 0

    class Viewer:
        def deliver(self, event) -> None:
            nonlocal written
            if seconds_each:
                time.sleep(seconds_each)  # a slow socket write, holding the loop
            order.append("viewer")
            written += 1

    async def scenario():
        hub = Audience(layer)
        watchers = [Viewer() for _ in range(viewers)]
        for viewer in watchers:
            await hub.join(group, viewer)

        async def other_work():
            while written < viewers:
                if written:  # only the turns taken while the broadcast is being written
                    order.append("turn")
                await asyncio.sleep(0)

        ticker = asyncio.get_running_loop().create_task(other_work())
        await layer.group_send(group, {"type": "poll.updated"})
        await asyncio.wait_for(ticker, timeout=10)
        for viewer in watchers:
            hub.leave(group, viewer)
        await asyncio.sleep(0.1)  # the last one out unsubscribes in the background

    run(scenario)
    return order


def test_a_broadcast_is_written_to_a_cheap_audience_in_one_turn_of_the_loop(live):
    """On a process saturated with votes, each turn given back cost the loop a wait for the
    GIL among the request threads: 1,000 viewers got about 1 update a second of 10."""
    written = _writes_and_turns(live, "fanout-cheap", viewers=200, seconds_each=0)
    assert written == ["viewer"] * 200


def test_a_slow_audience_lets_the_loop_serve_other_work_between_slices(live):
    # 2 ms a viewer: the slice of 20 ms ends after the first 32, and the loop gets a turn.
    written = _writes_and_turns(live, "fanout-slow", viewers=96, seconds_each=0.002)
    assert written.count("viewer") == 96
    turns = [index for index, what in enumerate(written) if what == "turn"]
    assert turns, "the loop was held for the whole audience"
    assert turns[0] >= 32  # not before the slice's first look at the clock
