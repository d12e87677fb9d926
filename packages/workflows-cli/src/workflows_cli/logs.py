"""Log output of the command-line tools: ``text`` for a terminal, ``json`` for a collector.

``json`` writes one object per line: ``timestamp`` (ISO-8601, UTC, milliseconds), ``level``,
``logger``, ``message``, ``exception`` (the traceback's text) when the record has one, then
every structured field the record carries (a worker's ``worker_id``, ``execution_id``,
``kind``, ``name``, ``queue``, ``attempt``, ``duration``; see ``workflows_worker.logs``).
``text`` is one line of time, level, logger and message: the fields stay out of it, as the
worker's messages already name what they are about.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from workflows.config import LOG_FORMATS, LOG_LEVELS

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "JsonFormatter", "setup_logging"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# What every LogRecord has: anything else on a record came in through `extra=` (or a filter).
_STANDARD = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
# Record attributes printed under another key: `name` is the logger's on every record.
_RENAMED = {"execution_name": "name"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines inside values are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_"):
                continue
            out.setdefault(_RENAMED.get(key, key), value)
        # default=str: a field of a type JSON lacks (a UUID, a datetime) must not lose the line.
        return json.dumps(out, ensure_ascii=False, default=str)


class _Handler(logging.StreamHandler[TextIO]):
    """The handler this module installs, told apart from any the application set up."""


def setup_logging(
    level: str = "INFO", fmt: str = "text", stream: TextIO | None = None
) -> logging.Handler | None:
    """Log records of ``level`` and above to stderr (or ``stream``) in ``fmt``; the handler
    installed.

    Like ``logging.basicConfig``, it leaves a process whose root logger has handlers of its
    own (an application, a test runner) alone, and returns None; called again, it replaces
    its own handler.
    """
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    if level.upper() not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _Handler)]
    if len(ours) != len(root.handlers):
        return None
    for handler in ours:
        root.removeHandler(handler)
    handler = _Handler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
