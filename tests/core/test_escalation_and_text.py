"""Escalation settings (gateway/policy/escalation.py) and terminal-safe printing
(gateway/cli/text.py), without a server."""

from __future__ import annotations

import pytest

import dsl
from gateway.cli.text import escape_controls
from gateway.errors import EscalationConfigError
from gateway.policy.escalation import EscalationSettings, escalation_diagnostic, escalation_problem

SETTINGS = EscalationSettings.from_mapping(
    {"allowed_urls": ["https://hooks.example.com/listed"], "retry_max": 5,
     "targets": {"oncall": {"url": "https://hooks.example.com/oncall",
                            "headers_env": {"authorization": "HOOK_AUTH"}}}},
    {"HOOK_AUTH": "Bearer s3cret"})


def _policy(path: str) -> dsl.CompiledPolicy:
    return dsl.compile_policy(f'policy v1 "p" {{\n  default allow\n  escalation_path "{path}"\n'
                              '  rule r { when input contains "x" then escalate reason X }\n}')


@pytest.mark.parametrize(("path", "file_ok", "inline_ok", "shown"), [
    ("oncall", True, True, "oncall"),
    ("https://hooks.example.com/listed", True, False, "listed-url"),
    ("http://127.0.0.1:9/internal", False, False, None),
    ("ops@example.com", True, True, "ops@example.com"),
    ("mailto:ops@example.com", True, True, "mailto:ops@example.com"),
    ("nobody", False, False, "nobody"),
])
def test_which_escalation_paths_are_allowed_where(path, file_ok, inline_ok, shown):
    policy = _policy(path)
    assert (escalation_problem(policy, SETTINGS) is None) is file_ok
    assert (escalation_problem(policy, SETTINGS, inline=True) is None) is inline_ok
    assert SETTINGS.shown(path) == shown
    diagnostic = escalation_diagnostic(policy, SETTINGS, policy.source, "p.pol")
    assert (diagnostic is None) is file_ok
    if diagnostic is not None:
        assert (diagnostic.file, diagnostic.line, diagnostic.severity) == ("p.pol", 3, "error")


def test_each_target_is_a_webhook_connector_without_the_url_in_its_name():
    entries = {e["escalation_target"]: e for e in SETTINGS.connector_entries()}
    assert entries["oncall"]["name"] == "escalation:oncall"
    assert entries["oncall"]["headers"] == {"authorization": "Bearer s3cret"}
    assert entries["oncall"]["retry_max"] == 5.0
    listed = entries["https://hooks.example.com/listed"]
    assert listed["name"].startswith("escalation:url-") and "hooks" not in listed["name"]
    assert all(e["type"] == "webhook" for e in entries.values())


def test_without_escalation_configuration_only_addresses_are_allowed():
    empty = EscalationSettings()
    assert escalation_problem(_policy("ops@example.com"), empty) is None
    assert escalation_problem(_policy("https://hooks.example.com/x"), empty) is not None
    assert empty.connector_entries() == []


@pytest.mark.parametrize("mapping", [
    {"targets": {"on call": {"url": "https://x"}}},
    {"targets": {"oncall": {"url": "ftp://x"}}},
    {"targets": {"oncall": {"url": "https://x", "secret": 1}}},
    {"targets": {"oncall": {"url": "https://x", "headers_env": {"a": "MISSING"}}}},
    {"allowed_urls": "https://x"},
    {"retry_max": 0},
    {"webhook": "https://x"},
])
def test_bad_escalation_configuration_is_refused(mapping):
    with pytest.raises(EscalationConfigError):
        EscalationSettings.from_mapping(mapping, {})


def test_escape_controls_keeps_text_and_escapes_hazards():
    assert escape_controls("Zoë 山田") == "Zoë 山田"
    assert escape_controls("a\x1b[2Jb\x9b\u202ec\u2028d\x7f") == \
        "a\\x1b[2Jb\\x9b\\u202ec\\u2028d\\x7f"
    assert escape_controls("line\n\tnext\r", keep_newlines=True) == "line\n\tnext\\x0d"
    assert escape_controls("line\nnext") == "line\\x0anext"
