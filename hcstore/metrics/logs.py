"""How a daemon's log lines look: plain text, or one JSON object per line for log collectors.

A JSON line carries ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, the
``request_id`` and ``op`` of a request when the line is about one, and ``exception`` (the
formatted traceback) when one is logged.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
EXTRA_FIELDS = ("request_id", "op", "node")
"""Attributes that a log call passes in ``extra=`` and a JSON line carries as fields of their own."""


class JsonFormatter(logging.Formatter):
    """Formats each record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line (no newline inside: tracebacks are escaped)."""
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in EXTRA_FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(log_format: str, log_file: str | None = None) -> None:
    """Send the process's log records at INFO and above to ``log_file`` (None: standard error) as ``log_format``.

    Args:
        log_format: ``"text"`` or ``"json"``.
        log_file: the file to append to.
    """
    handler: logging.Handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
