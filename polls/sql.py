"""Quoted table and column names, from the models, for the few hand-written statements.

The vote path, the worker's batch and the leaderboard read use raw SQL where the ORM
cost more CPU than the query (see the README's Performance section); their names still
follow the models.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection
from django.db.models import Model


def table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def column(model: type[Model], field: str) -> str:
    return connection.ops.quote_name(model._meta.get_field(field).column)


def columns(model: type[Model], fields: Iterable[str]) -> str:
    return ", ".join(column(model, field) for field in fields)
