"""A web process and a vote worker with the production settings, and polls to vote in."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.faults.load import create_poll, production_env
from testsupport.processes import WebServer, WorkerProcess


@dataclass
class Stack:
    env: dict[str, str]
    web: WebServer
    worker: WorkerProcess
    polls: dict[int, int]  # poll id -> its number of options


@contextmanager
def web_and_worker(process_env: Mapping[str, str], log_dir: Path, *, label: str, polls: int = 3,
                   **overrides: str) -> Iterator[Stack]:
    """Start both (production rate limits, `overrides` on top), create `polls` polls; kill both at the end."""
    env = production_env(process_env, **overrides)
    web = WebServer(env=env, log_dir=log_dir)
    worker = WorkerProcess(env=env, log_dir=log_dir, group=env["KAFKA_CONSUMER_GROUP"])
    try:
        web.start()
        worker.start()
        poll_ids = {create_poll(web.url, question=f"{label} poll {n}"): 4 for n in range(polls)}
        yield Stack(env=env, web=web, worker=worker, polls=poll_ids)
    finally:
        web.kill()
        worker.kill()
