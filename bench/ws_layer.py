"""Channel layer benchmark: group_send to one large group, core vs pub/sub layer.

    python -m bench.ws_layer --redis-url redis://127.0.0.1:6390/0 --group-size 10000

For each layer it creates N channels in this process, adds them all to one group,
then sends a poll.updated-sized message to the group R times and measures:

- send: how long group_send itself takes (what the broadcasting worker pays);
- all received: from the start of group_send until every one of the N channels has
  received the message (what the viewers wait for, as far as the layer goes).

Receivers and sender share one process and one event loop, so "all received" includes
both sides' CPU, as on a small machine that runs the web and worker processes together.
Not a timed assertion: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time


def _message(version: int) -> dict:
    # The size and shape of a real poll.updated event.
    return {
        "type": "poll.updated",
        "poll": {
            "id": 1,
            "question": "What is your favourite colour?",
            "option1": 1000 + version,
            "option2": 2000,
            "option3": 3000,
            "option4": 4000,
            "options": [
                {"position": p, "text": text, "count": 1000 * p}
                for p, text in enumerate(["Red", "Blue", "Green", "Yellow"], start=1)
            ],
            "total": 10000 + version,
            "status": "open",
            "version": version,
            "created_at": "2025-01-01T00:00:00+00:00",
        },
    }


async def _measure(layer, *, group_size: int, rounds: int) -> dict[str, float]:
    group = "bench.group"
    channels = [await layer.new_channel() for _ in range(group_size)]
    started = time.perf_counter()
    for channel in channels:
        await layer.group_add(group, channel)
    group_add_s = time.perf_counter() - started

    sends: list[float] = []
    alls: list[float] = []
    for version in range(1, rounds + 1):
        receivers = [asyncio.ensure_future(layer.receive(channel)) for channel in channels]
        await asyncio.sleep(0.2)  # let every receive() subscribe / start polling
        t0 = time.perf_counter()
        await layer.group_send(group, _message(version))
        sends.append(time.perf_counter() - t0)
        got = await asyncio.wait_for(asyncio.gather(*receivers), timeout=120)
        alls.append(time.perf_counter() - t0)
        assert all(message["poll"]["version"] == version for message in got), "wrong message received"

    for channel in channels:
        await layer.group_discard(group, channel)
    await layer.flush()
    return {
        "group_add_total_s": group_add_s,
        "send_ms_median": statistics.median(sends) * 1000,
        "all_received_ms_median": statistics.median(alls) * 1000,
        "all_received_ms_max": max(alls) * 1000,
    }


def _layer(kind: str, redis_url: str):
    if kind == "core":
        from channels_redis.core import RedisChannelLayer

        # Capacity per channel must not be what limits the measurement.
        return RedisChannelLayer(hosts=[redis_url], capacity=1000, expiry=60)
    from channels_redis.pubsub import RedisPubSubChannelLayer

    return RedisPubSubChannelLayer(hosts=[redis_url])


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ws_layer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--group-size", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--layers", nargs="+", default=["core", "pubsub"], choices=["core", "pubsub"])
    args = parser.parse_args()

    print(f"group_send to one group, {args.rounds} rounds each, Redis at {args.redis_url}")
    print(
        f"{'layer':8} {'group':>7} {'group_add all (s)':>18} {'send (ms)':>10} "
        f"{'all received p50 (ms)':>22} {'max (ms)':>9}"
    )
    for size in args.group_size:
        for kind in args.layers:
            figures = asyncio.run(_measure(_layer(kind, args.redis_url), group_size=size, rounds=args.rounds))
            print(
                f"{kind:8} {size:>7} {figures['group_add_total_s']:>18.2f} {figures['send_ms_median']:>10.1f}"
                f" {figures['all_received_ms_median']:>22.1f} {figures['all_received_ms_max']:>9.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
