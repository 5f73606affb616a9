"""Per-process fan-out: one layer subscription per poll, whatever the audience; frames."""

from __future__ import annotations

import asyncio
import struct
import time

import redis.asyncio as aioredis
from django.conf import settings

from polls.tests.factories import make_poll
from realtime.events import poll_group
from realtime.fanout import Audience, _fold, audience, text_frame
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


def test_pending_updates_keep_only_what_is_not_stale_in_order():
    pending: dict = {}
    for event in [
        {"type": "poll.updated", "poll_id": 1, "version": 5},
        {"type": "leaderboard.updated", "text": "first"},
        {"type": "poll.updated", "poll_id": 2, "version": 1},
        {"type": "poll.updated", "poll_id": 1, "version": 4},  # older than the one held: dropped
        {"type": "poll.updated", "poll_id": 2, "version": 3},  # newer: replaces version 1 in its place
        {"type": "leaderboard.updated", "text": "second"},
        {"type": "poll.removed", "poll_id": 1},  # drops poll 1's pending update
        {"type": "poll.updated", "poll_id": 1, "version": 6},  # shown again: after the removal
        {"type": "other", "n": 1},
        {"type": "other", "n": 2},  # unknown kinds are never folded
    ]:
        _fold(pending, event)
    assert list(pending.values()) == [
        {"type": "leaderboard.updated", "text": "second"},
        {"type": "poll.updated", "poll_id": 2, "version": 3},
        {"type": "poll.removed", "poll_id": 1},
        {"type": "poll.updated", "poll_id": 1, "version": 6},
        {"type": "other", "n": 1},
        {"type": "other", "n": 2},
    ]


def _burn(seconds: float) -> None:
    """Spend this much of the thread's CPU time (a costly socket write)."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


def _writes(
    layer, group: str, *, cpu_share: float, cost: float, sends: list[list[dict]]
) -> list[tuple[float, list[dict], float, float]]:
    """The group's writes: (when, the events written, the loop's time the group rested until
    before it, the loop's time it began), each send list going out once the viewer has the
    last event of the one before; a viewer costs `cost` of CPU an event."""
    writes: list[tuple[float, list[dict], float, float]] = []
    received: list[dict] = []

    class Recording(Audience):
        async def _deliver(self, entry, events):
            writes.append((time.monotonic(), list(events), entry.next_write, self.loop.time()))
            return await super()._deliver(entry, events)

    class Viewer:
        def deliver(self, event) -> None:
            _burn(cost)
            received.append(event)

    async def scenario():
        hub = Recording(layer, cpu_share=cpu_share)
        viewer = Viewer()
        await hub.join(group, viewer)
        for batch in sends:
            for event in batch:
                await layer.group_send(group, event)
            for _ in range(300):
                if received and received[-1] == batch[-1]:
                    break
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # nothing more comes
        hub.leave(group, viewer)
        await asyncio.sleep(0.1)  # the last one out unsubscribes in the background

    run(scenario)
    assert received == [event for _, events, _, _ in writes for event in events]
    return writes


def _update(version: int) -> dict:
    return {"type": "poll.updated", "poll_id": 7, "version": version}


def test_a_costly_audience_rests_its_share_and_gets_the_updates_of_the_rest_folded(live):
    # 20 ms of CPU a write at a share of 0.05: the group rests until 400 ms after the write began.
    writes = _writes(
        live, "fanout-share", cpu_share=0.05, cost=0.02, sends=[[_update(1)], [_update(2), _update(3), _update(4)]]
    )
    assert [events for _, events, _, _ in writes] == [[_update(1)], [_update(4)]]
    assert writes[1][0] - writes[0][0] >= 0.39


def test_a_cheap_audience_is_written_every_update(live):
    sends = [[_update(version)] for version in range(1, 6)]
    writes = _writes(live, "fanout-cheap-share", cpu_share=0.1, cost=0, sends=sends)
    assert [events for _, events, _, _ in writes] == sends


def test_the_largest_audience_still_gets_an_update_a_second(live):
    # 10 ms a write at a share of 0.001 would be a rest of 10 s; it is cut to 1 s.
    writes = _writes(live, "fanout-longest", cpu_share=0.001, cost=0.01, sends=[[_update(1)], [_update(2)]])
    assert [events for _, events, _, _ in writes] == [[_update(1)], [_update(2)]]
    # The rest, cut to 1 s: scheduled from the write's start, a moment before it was recorded.
    assert 0.9 < writes[1][2] - writes[0][3] <= 1.0
    assert writes[1][0] - writes[0][0] >= 0.95


def test_with_no_share_a_group_is_written_again_as_soon_as_an_update_arrives(live):
    writes = _writes(live, "fanout-no-share", cpu_share=0, cost=0.02, sends=[[_update(1)], [_update(2)]])
    assert [events for _, events, _, _ in writes] == [[_update(1)], [_update(2)]]
    assert [rested_until for _, _, rested_until, _ in writes] == [0.0, 0.0]  # no rest at all
