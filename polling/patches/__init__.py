"""Patches of third-party internals: the one place they live, each pinned by a test.

Each module here changes a library's private behaviour; its test in `tests/` checks
what the patch relies on, so an upgrade that moves it fails there. Keep one only while
a measurement or a reproduced defect shows it pays.

- `kafka_rebalance`: kafka-python's consumer finishes a rebalance it started.
- `kafka_records`: the worker's consumer reads fetched record batches in one loop.
- `uvicorn_websockets`: a broadcast's frame, built once, written to each of uvicorn's
  WebSocket connections (realtime.fanout).
"""
