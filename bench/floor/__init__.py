"""The framework floor: benchmark-only endpoints that do what the vote API does minus all I/O.

Never part of the product: only `DJANGO_SETTINGS_MODULE=bench.floor.settings` routes to it.
"""
