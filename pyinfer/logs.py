"""Logging as plain text or one JSON object a line; extra fields travel in `record.fields`."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class JsonFormatter(logging.Formatter):
    def __init__(self, process: str = ""):
        super().__init__()
        self.process = {"process": process} if process else {}  # which of the server's processes wrote it

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            **self.process,
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str, fmt: str, process: str = "") -> None:
    """Route every logger (uvicorn's too) through one handler on stderr; `process` names the server's
    process that logs (`api-0`, `engine-core`), as `[api-0]` in a text line or a JSON record's field."""
    handler = logging.StreamHandler()
    tag = f"[{process}] " if process else ""
    text = f"%(asctime)s %(levelname)s {tag}%(name)s: %(message)s"
    handler.setFormatter(JsonFormatter(process) if fmt == "json" else logging.Formatter(text))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())


def configured_format() -> str:
    """The format configure_logging set for this process ("text" if it was not called), for a process
    it starts to log alike."""
    json_handlers = [h for h in logging.getLogger().handlers if isinstance(h.formatter, JsonFormatter)]
    return "json" if json_handlers else "text"


@contextmanager
def announce_if_slow(log: logging.Logger, after_s: float, what: str) -> Iterator[None]:
    """Says `what` is under way if it is still going after `after_s` seconds, and then when it ends: work
    that is quick but for the first time (a build, say) leaves no silent minute, and no line otherwise."""
    start = time.perf_counter()
    announced = threading.Event()

    def announce() -> None:
        announced.set()
        log.info("%s...", what)

    timer = threading.Timer(after_s, announce)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        if announced.is_set():
            log.info("%s: ended after %.1fs", what, time.perf_counter() - start)
