"""Where the controller's log goes and in what shape: stderr, either one
readable line per event (text) or one JSON object per line (json) for a
log shipper. In JSON every line is one event: a traceback is a field of its
event (exc_info), never lines of its own, and so are the structured fields
the code attaches (extra={"enforcement_id": ..., "case_id": ...}).
"""
from __future__ import annotations

import logging
import sys
import threading
from types import TracebackType
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG = logging.getLogger("enforcement-controller")


def setup(level: str, fmt: str = "text", stream: TextIO | None = None) -> None:
    """Logs at `level` and above to stderr (or `stream`), as `fmt` (text or json)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(
            "{levelname}{name}{message}", style="{",
            # The record's own creation time, ISO 8601 in UTC.
            timestamp="time",
            rename_fields={"levelname": "level", "name": "logger"}))
        # Whatever would otherwise print itself on stderr goes through the
        # log, so that every line stays one JSON event: Python's warnings,
        # and exceptions that end a thread or the main program.
        logging.captureWarnings(True)
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_uncaught_in_thread
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def _log_uncaught(kind: type[BaseException], exc: BaseException,
                  traceback: TracebackType | None) -> None:
    LOG.critical("uncaught %s", kind.__name__, exc_info=(kind, exc, traceback))


def _log_uncaught_in_thread(hook: threading.ExceptHookArgs) -> None:
    if hook.exc_type is SystemExit:
        return  # what threading's own hook ignores too
    name = hook.thread.name if hook.thread else "?"
    LOG.error("thread %s ended by %s", name, hook.exc_type.__name__,
              exc_info=(hook.exc_type, hook.exc_value or hook.exc_type(), hook.exc_traceback))
