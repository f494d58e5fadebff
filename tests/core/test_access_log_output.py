"""`configure_logging`: JSON lines written by a thread, exceptions kept (docs/operations.md)."""

from __future__ import annotations

import logging
import os

import orjson
import pytest

from gateway.http import access_log


@pytest.fixture
def restored_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in ("httpx2", "httpcore2")}
    yield
    access_log.stop_log_thread()
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)


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


def test_access_lines_skip_the_logging_machinery_but_read_the_same(restored_logging, capfd):
    access_log.configure_logging("INFO")
    record = access_log.RequestRecord(request_id="r-1", method="POST", path="/v1/messages",
                                      surface="compat", api="messages", started=0.0, status=200)
    access_log.log_request(record, 0.0123)
    access_log.log_request(record, 0.001, level=logging.DEBUG)  # below the level: no line
    access_log.stop_log_thread()
    (line,) = [orjson.loads(raw) for raw in capfd.readouterr().err.splitlines()]
    assert {k: line[k] for k in ("level", "logger", "message", "request_id", "status",
                                 "duration_ms")} == {
        "level": "info", "logger": "gateway.access", "message": "request",
        "request_id": "r-1", "status": 200, "duration_ms": 12.3}
    assert line["ts"].endswith("Z") and isinstance(line["pid"], int)


def test_a_stuck_log_pipe_drops_and_counts_instead_of_growing(tmp_path):
    fd = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT)
    lines = access_log.LineBuffer(fd, max_lines=3)
    for index in range(5):  # the thread is not started: nothing is written meanwhile
        lines.add(b"%d\n" % index)
    assert lines.dropped == 2
    lines.stop()
    os.close(fd)
    assert (tmp_path / "log").read_bytes() == b"0\n1\n2\n"
