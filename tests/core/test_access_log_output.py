"""`configure_logging`: JSON lines written by a thread, exceptions kept (SPEC §12)."""

from __future__ import annotations

import logging

import orjson
import pytest

from gateway import access_log


@pytest.fixture
def restored_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    access_log.stop_log_thread()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_lines_are_json_with_fields_and_exceptions(restored_logging, capfd):
    access_log.configure_logging("INFO")
    logging.getLogger("gateway.access").info("request", extra={"fields": {"status": 200}})
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("gateway").exception("failed %s", "hard")
    logging.getLogger("gateway").debug("below the level")
    access_log.stop_log_thread()  # waits until the thread wrote everything queued
    lines = [orjson.loads(line) for line in capfd.readouterr().err.splitlines()]
    assert [(line["logger"], line["message"]) for line in lines] == [
        ("gateway.access", "request"), ("gateway", "failed hard")]
    assert lines[0]["status"] == 200
    assert "ValueError: boom" in lines[1]["exception"]
