"""Log formatting: one JSON object per line in production, plain text in development.

settings.LOGGING picks the formatter from LOG_FORMAT (default: "json" unless DEBUG);
the server's own lines (uvicorn's, as polling.serve configures it) go through the same formatter.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from django.core.exceptions import ImproperlyConfigured

from polling.env import env_str

# Attributes every LogRecord has; anything else on a record came from `extra=` and is
# kept as a field of its own.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line, for log collectors to parse.

    Fields: ``time`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``, ``message``,
    ``process``, ``thread``; ``exc_info`` (the formatted traceback) and ``stack_info``
    when present; plus every ``extra=`` field, JSON-encoded or else as its str().
    Newlines inside the message are escaped by the encoding, so a record never spans lines.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
        }
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_") and key not in entry:
                entry[key] = value
        return json.dumps(entry, default=str, ensure_ascii=False)


def log_format(*, debug: bool) -> str:
    """LOG_FORMAT from the environment: "json" or "plain" (the default: plain when debugging)."""
    fmt = env_str("LOG_FORMAT", "plain" if debug else "json")
    if fmt not in ("json", "plain"):
        raise ImproperlyConfigured(f"LOG_FORMAT={fmt!r} must be 'json' or 'plain'.")
    return fmt


def logging_config(*, level: str, fmt: str, loggers: dict[str, dict] | None = None) -> dict:
    """The `logging.config.dictConfig` of every process: one handler on stderr, in `fmt`."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
            "json": {"()": "polling.logging.JsonFormatter"},
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": fmt}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "kafka": {"level": "WARNING"},
            # Django's own console handler (DEBUG only) would print its records a second
            # time, in another format; they reach the root handler anyway.
            "django": {"handlers": [], "propagate": True},
            **(loggers or {}),
        },
    }
