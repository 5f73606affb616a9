"""A web process and a vote worker with the production settings, and polls to vote in."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from testsupport.ledger import ACCEPTED, VoteStream, create_poll, production_env
from testsupport.processes import WebServer, WorkerProcess


@dataclass
class Stack:
    env: dict[str, str]
    web: WebServer  # the server now running: restart_mid_stream replaces it
    worker: WorkerProcess
    polls: dict[int, int]  # poll id -> its number of options
    log_dir: Path


@contextmanager
def web_and_worker(
    process_env: Mapping[str, str], log_dir: Path, *, label: str, polls: int = 3, workers: int = 1, **overrides: str
) -> Iterator[Stack]:
    """Start a web server (`workers` processes) and a worker (production rate limits,
    `overrides` on top), create `polls` polls; kill both at the end."""
    env = production_env(process_env, **overrides)
    worker = WorkerProcess(env=env, log_dir=log_dir, group=env["KAFKA_CONSUMER_GROUP"])
    stack = Stack(
        env=env, web=WebServer(env=env, log_dir=log_dir, workers=workers), worker=worker, polls={}, log_dir=log_dir
    )
    try:
        stack.web.start()
        worker.start()
        stack.polls = {create_poll(stack.web.url, question=f"{label} poll {n}"): 4 for n in range(polls)}
        yield stack
    finally:
        stack.web.kill()
        worker.kill()


def restart_mid_stream(
    stack: Stack,
    stream: VoteStream,
    *,
    times: int,
    stop: Callable[[WebServer], object],
    pause: Callable[[], float] = lambda: 0.0,
) -> list[tuple[float, float, float]]:
    """`times` times, after `pause()` seconds: stop the stack's server with `stop` and start
    another of its kind on the same port at once, as a supervisor does; then wait for 150
    accepted votes. Returns (stop sent, process gone, new one ready) of each restart."""
    windows = []
    for _ in range(times):
        time.sleep(pause())
        stopping = time.monotonic()
        stop(stack.web)
        gone = time.monotonic()
        stack.web = WebServer(env=stack.env, log_dir=stack.log_dir, port=stack.web.port, workers=stack.web.workers)
        stack.web.start()
        ready = time.monotonic()
        windows.append((stopping, gone, ready))
        stream.wait_for(ACCEPTED, 150, since=ready, timeout=60)
    return windows
