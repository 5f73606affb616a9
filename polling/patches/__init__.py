"""Patches of third-party internals: the one place they live, each pinned by a test.

Each module here changes a library's private behaviour; its test in `tests/` checks
what the patch relies on, so an upgrade that moves it fails there. Keep one only while
a measurement or a reproduced defect shows it pays.

- `kafka_rebalance`: kafka-python's consumer finishes a rebalance it started.
- `kafka_records`: the worker's consumer reads fetched record batches in one loop.

Also belong here: the daphne request patches (polling/handlers.py), the ASGI body
limits reaching into daphne (polling/asgi_limits.py), and the WebSocket writes through
Twisted's transport (realtime/fanout.py).
"""
