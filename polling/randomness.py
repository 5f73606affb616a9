"""Random ids from the operating system's generator, read a block at a time.

os.urandom releases the GIL for its system call; on a server process whose loop thread
shares the GIL with the Kafka producer's I/O thread, each release can leave the loop
waiting for the GIL to come back. A vote needs 16 random bytes (its id) and a new voter
32 more, so they are read 4 KB at a time per thread: one call for about 250 votes. The
bytes are as random as os.urandom's (they are os.urandom's), and a forked child never
reuses its parent's.
"""

from __future__ import annotations

import base64
import os
import threading
import uuid

_BLOCK = 4096


class _Pool(threading.local):
    def __init__(self) -> None:
        self.block = b""
        self.offset = 0


_pool = _Pool()


def _forget_after_fork() -> None:
    global _pool
    _pool = _Pool()


os.register_at_fork(after_in_child=_forget_after_fork)


def random_bytes(size: int) -> bytes:
    """`size` bytes from os.urandom, never handed out twice."""
    pool = _pool
    if pool.offset + size > len(pool.block):
        pool.block, pool.offset = os.urandom(max(_BLOCK, size)), 0
    start = pool.offset
    pool.offset = start + size
    return pool.block[start : start + size]


def random_uuid() -> uuid.UUID:
    """As uuid.uuid4()."""
    return uuid.UUID(bytes=random_bytes(16), version=4)


def random_token(size: int = 16) -> str:
    """As secrets.token_urlsafe(size)."""
    return base64.urlsafe_b64encode(random_bytes(size)).rstrip(b"=").decode("ascii")
