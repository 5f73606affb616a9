"""polling.randomness: os.urandom's bytes, a block at a time, never the same twice."""

from __future__ import annotations

import os
import threading
import uuid

from polling import randomness


def test_ids_are_version_4_uuids_and_tokens_as_long_as_secrets_makes_them():
    ids = [randomness.random_uuid() for _ in range(2000)]  # past one block
    assert len(set(ids)) == 2000
    assert all(isinstance(i, uuid.UUID) and i.version == 4 and i.variant == uuid.RFC_4122 for i in ids)
    tokens = {randomness.random_token(16) for _ in range(1000)}
    assert len(tokens) == 1000 and {len(t) for t in tokens} == {22}


def test_threads_never_share_bytes():
    seen: list[bytes] = []
    lock = threading.Lock()

    def take() -> None:
        mine = [randomness.random_bytes(16) for _ in range(1000)]
        with lock:
            seen.extend(mine)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(seen)) == len(seen) == 4000


def test_a_forked_child_does_not_reuse_the_parents_block():
    randomness.random_bytes(16)  # the parent holds a block with bytes left
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next bytes and leave at once
        os.write(write, randomness.random_bytes(16))
        os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert child != randomness.random_bytes(16)
