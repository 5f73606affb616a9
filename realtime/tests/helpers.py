"""Helpers for driving consumers with WebsocketCommunicator from synchronous tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from polling.asgi import application
from polls.domain.services import votes_apply
from polls.tests.factories import vote_event


def run(coro_fn, *args, **kwargs):
    """Run an async scenario from a sync test; its sync_to_async calls run on this thread."""
    return async_to_sync(coro_fn)(*args, **kwargs)


def communicator(
    path: str, *, origin: bytes | None = b"http://localhost", host: bytes = b"localhost", headers=()
) -> WebsocketCommunicator:
    all_headers = [(b"host", host), *headers]
    if origin is not None:
        all_headers.append((b"origin", origin))
    return WebsocketCommunicator(application, path, headers=all_headers)


async def apply_votes(poll, *options: int) -> None:
    """Apply each vote as its own batch, through the worker's code path."""
    for option in options:
        await database_sync_to_async(votes_apply)(events=[vote_event(poll, option)])


async def receive(comm: WebsocketCommunicator, timeout: float = 5) -> dict[str, Any]:
    return json.loads(await comm.receive_from(timeout=timeout))


async def receive_until(comm: WebsocketCommunicator, predicate, timeout: float = 10) -> list[dict[str, Any]]:
    """Messages up to and including the first one matching predicate.

    Waits with receive_nothing: a receive that times out cancels the consumer.
    """
    seen: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if await comm.receive_nothing(timeout=max(0.0, min(0.05, deadline - loop.time())), interval=0.005):
            if loop.time() >= deadline:
                raise AssertionError(f"no matching message within {timeout} s; got {seen}")
            continue
        message = await receive(comm)
        seen.append(message)
        if predicate(message):
            return seen


async def drain(comm: WebsocketCommunicator, quiet: float = 1.0) -> list[dict[str, Any]]:
    """Every message until none arrives for `quiet` seconds."""
    seen = []
    while not await comm.receive_nothing(timeout=quiet, interval=0.005):
        seen.append(await receive(comm))
    return seen
