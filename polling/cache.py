"""The shared cache's Redis client, one per process.

Django gives every async context (under ASGI: every request) its own cache object, and
its Redis backend builds a client, with a new connection pool, per object: each vote
opened a new TCP connection to Redis for its rate-limit counters. The client is
thread-safe, so one per process and location serves every request.

Django's client also builds a new redis.Redis object for every command (get_client),
and redis-py fills a case-insensitive table of response callbacks in each: most of the
rate limits' CPU per vote (docs/decisions/0004-django-request-path.md). The client here
keeps one redis.Redis per connection pool; redis-py's Redis objects are thread-safe
(each command or pipeline takes a connection from the pool).
"""

from __future__ import annotations

import threading

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

_clients: dict[tuple, object] = {}
_lock = threading.Lock()


class KeptRedisCacheClient(RedisCacheClient):
    """Django's Redis cache client, with one redis.Redis object per pool instead of one per command."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._redis_clients: dict[int, object] = {}

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        client = self._redis_clients.get(id(pool))  # pools live as long as this client
        if client is None:
            client = self._redis_clients.setdefault(id(pool), self._client(connection_pool=pool))
        return client


class SharedClientRedisCache(RedisCache):
    def __init__(self, server, params) -> None:
        super().__init__(server, params)
        self._class = KeptRedisCacheClient

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

    def incr_many(self, counts: list[tuple[str, int, int]]) -> list[int]:
        """Add to each (key, amount, expiry seconds) counter; return the new counts.

        One round trip for all of them (a pipeline of INCRBY and EXPIRE per key), where
        Django's add + incr costs two per key. The expiry is set again on every call.
        """
        full = [(self.make_and_validate_key(key), amount, expiry) for key, amount, expiry in counts]
        pipeline = self._cache.get_client(full[0][0], write=True).pipeline(transaction=False)
        for key, amount, expiry in full:
            pipeline.incrby(key, amount)
            pipeline.expire(key, expiry)
        return pipeline.execute()[::2]
