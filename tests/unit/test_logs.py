"""The log's two shapes (controller/process/logs.py): JSON lines carry the structured
fields a log site attaches, and a traceback stays inside its event."""
import io
import json
import logging
import sys
import threading

import pytest

from controller.process import logs


@pytest.fixture
def captured(monkeypatch):
    """setup() changes process-wide things: each is put back afterwards."""
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield io.StringIO()
    logging.captureWarnings(False)
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_enforcement_and_case_ids_and_tracebacks(captured):
    logs.setup("INFO", "json", captured)
    log = logging.getLogger("enforcement.lifecycle.service")
    log.error("enforcement %s failed: %s", "e-1", "refused",
              extra={"enforcement_id": "e-1", "case_id": "CASE-7"})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("maintenance round failed")
    log.debug("not at INFO")
    first, second = (json.loads(line) for line in captured.getvalue().splitlines())
    assert first["message"] == "enforcement e-1 failed: refused"
    assert (first["level"], first["logger"]) == ("ERROR", "enforcement.lifecycle.service")
    assert (first["enforcement_id"], first["case_id"]) == ("e-1", "CASE-7")
    assert "time" in first
    assert second["message"] == "maintenance round failed"
    assert second["exc_info"].startswith("Traceback") and "RuntimeError: boom" in \
        second["exc_info"]


def test_text_lines_read_as_before(captured):
    logs.setup("WARNING", "text", captured)
    logging.getLogger("x").warning("hello %d", 1)
    logging.getLogger("x").info("quiet")
    assert captured.getvalue().rstrip().endswith(" WARNING x: hello 1")
    assert len(captured.getvalue().splitlines()) == 1
