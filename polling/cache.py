"""The shared cache's Redis client, one per process.

Django gives every async context (under ASGI: every request) its own cache object, and
its Redis backend builds a client, with a new connection pool, per object: each vote
opened a new TCP connection to Redis for its rate-limit counters. The client is
thread-safe, so one per process and location serves every request.
"""

from __future__ import annotations

import threading

from django.core.cache.backends.redis import RedisCache

_clients: dict[tuple, object] = {}
_lock = threading.Lock()


class SharedClientRedisCache(RedisCache):
    @property
    def _cache(self):
        key = (tuple(self._servers), tuple(sorted((k, repr(v)) for k, v in self._options.items())))
        client = _clients.get(key)
        if client is None:
            with _lock:
                client = _clients.get(key)
                if client is None:
                    client = _clients[key] = self._class(self._servers, **self._options)
        return client

    def incr_many(self, keys: list[tuple[str, int]]) -> list[int]:
        """Add one to each (key, expiry seconds) counter; return the new counts.

        One round trip for all of them (a pipeline of INCR and EXPIRE per key), where
        Django's add + incr costs two per key. The expiry is set again on every call.
        """
        full_keys = [(self.make_and_validate_key(key), expiry) for key, expiry in keys]
        pipeline = self._cache.get_client(full_keys[0][0], write=True).pipeline(transaction=False)
        for key, expiry in full_keys:
            pipeline.incr(key)
            pipeline.expire(key, expiry)
        return pipeline.execute()[::2]
