"""Terminal injection: labels accepted C1 controls, bidi overrides and U+2028,
and `gateway events tail` printed them raw, so a caller's `policy_user` could rewrite an
operator's terminal. Now such labels are refused with a 400 naming the header or field, and
the CLI escapes control characters in what it prints."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.db import open_database

REPO = Path(__file__).resolve().parents[2]
#: The characters of HOSTILE that must never reach a terminal raw.
DANGEROUS = set("\x9b\x1b\x07\u202e\u2066\u2069\u2028\u2029\x7f\x85")
HOSTILE = {"csi": "\x9b2J", "escape": "\x1b]0;pwned\x07", "bidi": "admin\u202egnp.exe",
           "isolate": "\u2066x\u2069", "line separator": "ok\u2028FAKE LINE",
           "paragraph": "a\u2029b", "del": "a\x7fb", "nel": "a\x85b"}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_labels_are_refused_naming_the_header_or_field(secure, name):
    value = HOSTILE[name]
    for header in ("x-policy-user", "x-policy-target"):
        response = secure.chat("hello", headers={header: value.encode()})  # UTF-8 bytes
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["code"], error["param"]) == ("invalid_request", header)
        assert header in error["message"]
    for field in ("policy_user", "policy_target"):
        response = secure.chat("hello", **{field: value})
        assert response.status_code == 400
        assert response.json()["error"]["param"] == field


def _cli(secure, tmp_path, *args):
    config = tmp_path / "cli.toml"
    config.write_text(f'[database]\npath = "{secure.gateway.db_path}"\n')
    return subprocess.run([sys.executable, "-m", "gateway", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_the_cli_escapes_stored_labels(secure, tmp_path):
    # A row written before the check existed (or by another tool) still prints safely.
    assert secure.chat("hello").status_code == 200
    deadline = time.monotonic() + 10
    while secure.state.event_writer.held and time.monotonic() < deadline:
        time.sleep(0.05)
    db = open_database(secure.gateway.db_path)
    try:
        row = db.execute("SELECT event_id FROM policy_events ORDER BY seq DESC").fetchone()
        hostile = "".join(HOSTILE.values())
        db.execute("UPDATE policy_events SET policy_user = ?, project_label = ? "
                   "WHERE event_id = ?", [hostile, hostile, row[0]])
        db.conn.commit()
        db.execute("UPDATE api_keys SET label = ?", [hostile])
        db.conn.commit()
    finally:
        db.conn.close()
    for args in (("events", "tail", "-n", "5"), ("events", "query", "--limit", "5"),
                 ("keys", "list")):
        result = _cli(secure, tmp_path, *args)
        assert result.returncode == 0, result.stderr
        assert DANGEROUS.isdisjoint(result.stdout), args
    tail = _cli(secure, tmp_path, "events", "tail", "-n", "5").stdout
    assert "\\x9b2J" in tail and "\\u202e" in tail and "\\u2028" in tail
    as_json = _cli(secure, tmp_path, "events", "tail", "-n", "5", "--json").stdout
    assert "\\u202e" in as_json and "\u202e" not in as_json
