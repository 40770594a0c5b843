"""Logging as plain text or one JSON object a line; extra fields travel in `record.fields`."""

from __future__ import annotations

import json
import logging
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str, fmt: str, tag: str = "") -> None:
    """Route every logger (uvicorn's too) through one handler on stderr."""
    handler = logging.StreamHandler()
    text = f"%(asctime)s %(levelname)s {tag}%(name)s: %(message)s"
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(text))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
