"""Quoted table and column names, from the models, for the few hand-written statements.

The vote path, the worker's batch and the leaderboard read use raw SQL where the ORM
cost more CPU than the query (docs/decisions/0005-*, 0007-*); their names still
follow the models.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from django.db import connection
from django.db.models import Model
from django.utils import timezone
from django.utils.dateparse import parse_datetime


def table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def column(model: type[Model], field: str) -> str:
    return connection.ops.quote_name(model._meta.get_field(field).column)


def columns(model: type[Model], fields: Iterable[str]) -> str:
    return ", ".join(column(model, field) for field in fields)


def placeholders(count: int) -> str:
    """`count` parameter placeholders for an IN (...) list."""
    return ", ".join(["%s"] * count)


def datetime_from_db(value: datetime | str | None) -> datetime | None:
    """A datetime column's value from a hand-written SELECT, aware and in UTC.

    PostgreSQL hands back aware datetimes. SQLite (the embedded mode) stores UTC and
    hands back naive ones (Django's converter for the declared type) or, for an
    expression, text; the ORM would make them aware, a raw cursor does not.
    """
    if isinstance(value, str):
        value = parse_datetime(value)
    if value is not None and timezone.is_naive(value):
        value = timezone.make_aware(value, UTC)
    return value
