"""Per-process fan-out: one layer subscription per poll, whatever the audience; frames."""

from __future__ import annotations

import asyncio
import struct

import redis.asyncio as aioredis
from django.conf import settings

from polls.tests.factories import make_poll
from realtime.events import poll_group
from realtime.fanout import audience, text_frame
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
