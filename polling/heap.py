"""Keep the objects of a process's start out of the garbage collector's full collections.

A web process starts with about 140,000 objects from its imports (Django, DRF,
Channels, Twisted, kafka-python, the project's views) that live as long as it does, and
Python's full (generation 2) collection walks every one of them, holding the GIL long
enough to set the answers' p99 (docs/decisions/0004-django-request-path.md).
`gc.freeze()` moves every object alive
at that moment to a permanent generation that collections skip. Reference counting
still frees them as usual; only a reference cycle among them would outlive its last
use, which is why the cyclic garbage of the start is collected first.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger(__name__)


def freeze_startup_heap(*, load_urls: bool = False) -> int:
    """Collect, then freeze every object alive now; returns how many are frozen.

    Call once the process has imported and built what it keeps. With `load_urls`, the
    URLconf and every view it names are imported first (Django otherwise imports them at
    the first request, after the freeze).
    """
    if load_urls:
        from django.urls import get_resolver

        get_resolver().url_patterns  # noqa: B018 - the import is the point
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.debug("froze %d objects of the process's start", frozen)
    return frozen
