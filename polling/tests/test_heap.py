"""polling.heap: what a process's start built is out of the garbage collector's collections."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path

import pytest

from polling.heap import freeze_startup_heap

REPO = Path(__file__).resolve().parents[2]


class _Node:
    """A container the collector tracks, which can sit in a reference cycle."""

    def __init__(self) -> None:
        self.other: _Node | None = None


def _tracked(obj: object) -> bool:
    """Whether a collection of generation 0, 1 or 2 would walk `obj` (frozen ones are in none)."""
    return any(candidate is obj for candidate in gc.get_objects())


@pytest.fixture
def thawed():
    """No automatic collection while a test arranges its objects; the test process thawed after."""
    gc.disable()
    yield
    gc.enable()
    gc.unfreeze()


def test_freezes_what_is_alive_and_leaves_later_objects_to_the_collector(thawed):
    before = gc.get_freeze_count()
    kept = _Node()
    assert _tracked(kept)

    frozen = freeze_startup_heap()

    assert frozen == gc.get_freeze_count() > before
    assert not _tracked(kept)
    later = _Node()
    assert _tracked(later)


def test_cyclic_garbage_of_the_start_is_collected_before_the_freeze(thawed):
    first, second = _Node(), _Node()
    first.other, second.other = second, first
    watch = weakref.ref(first)
    del first, second  # a cycle: only the collector can free it, and it is not yet run
    assert watch() is not None

    freeze_startup_heap()

    assert watch() is None  # collected, not frozen for the life of the process


def test_the_web_process_freezes_its_start_with_every_view_imported():
    """What the server loads: polling.asgi, in a process of its own."""
    script = (
        "import gc, json, sys; import polling.asgi; "
        "print(json.dumps({'frozen': gc.get_freeze_count(), 'views': 'polls.api.apis' in sys.modules, "
        "'leaderboard': 'leaderboard.apis' in sys.modules}))"
    )
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="polling.settings", DEBUG="1")
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # Django, DRF, Channels and the project's views: well over a hundred thousand objects.
    assert report["frozen"] > 50_000
    assert report["views"] and report["leaderboard"]
