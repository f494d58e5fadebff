"""The commands a new user meets in the first hour: the served policies directory in the data
directory, `policies add` with its cases, `admin-token`, and `accounts create` refusing a name
already used unless asked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main as cli
from gateway.cli.setup_commands import admin_token_for_serving
from gateway.config import Config
from gateway.datadir import EXAMPLES_DIR, ensure_admin_token, prepare_policies_dir
from gateway.errors import ConfigError


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f'[database]\npath = "{tmp_path / "data" / "gw.db"}"\n' + extra)
    return path


def test_the_default_policies_directory_is_seeded_with_the_examples_once(tmp_path: Path):
    config = Config.load(_config(tmp_path), env={})
    assert Path(config.policies_dir) == tmp_path / "data" / "policies"
    served = prepare_policies_dir(config)
    examples = sorted(p.name for p in EXAMPLES_DIR.iterdir() if p.suffix in (".pol", ".json"))
    assert sorted(p.name for p in served.iterdir()) == examples
    (served / "support_bot.pol").unlink()  # the user's directory now: never seeded again
    prepare_policies_dir(config)
    assert not (served / "support_bot.pol").exists()


def test_a_configured_policies_directory_is_used_as_it_is(tmp_path: Path):
    config = Config.load(_config(tmp_path, f'[policies]\ndirectory = "{tmp_path / "mine"}"\n'),
                         env={})
    prepare_policies_dir(config)
    assert not (tmp_path / "mine").exists()


def test_policies_add_copies_the_cases_beside_the_file(tmp_path: Path, capsys):
    config = _config(tmp_path)
    source = tmp_path / "mine" / "calm.pol"
    source.parent.mkdir()
    source.write_text('policy v1 "calm" {\n  default allow\n}\n')
    cases = '{"cases": [{"name": "hello", "text": "hi", "expect": {"decision": "allow"}}]}\n'
    (tmp_path / "mine" / "calm.cases.json").write_text(cases)
    assert cli.main(["policies", "add", str(source), "--config", str(config), "--json"]) == 0
    placed = json.loads(capsys.readouterr().out)
    assert Path(placed["path"]) == tmp_path / "data" / "policies" / "calm.pol"
    assert (tmp_path / "data" / "policies" / "calm.cases.json").read_text() == cases


def test_admin_token_prints_the_generated_token(tmp_path: Path, capsys):
    config = _config(tmp_path)
    assert cli.main(["admin-token", "--config", str(config)]) == 1
    assert "python -m gateway serve" in capsys.readouterr().err
    token, created = ensure_admin_token(Config.load(config, env={}))
    assert created and ensure_admin_token(Config.load(config, env={})) == (token, False)
    assert ((tmp_path / "data" / "admin-token").stat().st_mode & 0o777) == 0o600
    assert cli.main(["admin-token", "--config", str(config)]) == 0
    assert capsys.readouterr().out == token + "\n"


def test_admin_token_does_not_print_a_configured_token(tmp_path: Path, capsys):
    config = _config(tmp_path, '[admin]\ntoken = "configured-0123456789-0123456789"\n')
    assert cli.main(["admin-token", "--config", str(config)]) == 1
    captured = capsys.readouterr()
    assert "configured-0123456789" not in captured.out + captured.err


def test_an_account_name_already_used_needs_allow_duplicate_name(tmp_path: Path, capsys):
    config = str(_config(tmp_path))
    assert cli.main(["accounts", "create", "demo", "--plan", "free", "--config", config,
                     "-q"]) == 0
    first = capsys.readouterr().out.strip()
    assert cli.main(["accounts", "create", "demo", "--plan", "free", "--config", config]) == 1
    assert capsys.readouterr().err == (
        f"error: an account named 'demo' exists already ({first}): use it, or pass "
        "--allow-duplicate-name to create another one\n")
    assert cli.main(["accounts", "create", "demo", "--plan", "free", "--config", config,
                     "--allow-duplicate-name", "-q"]) == 0
    assert capsys.readouterr().out.strip() not in ("", first)


@pytest.mark.parametrize("argv", [["--version"]])
def test_the_gateway_has_a_version(argv, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("python -m gateway ")


def test_an_empty_admin_token_file_is_an_error_not_a_new_secret(tmp_path: Path):
    config = Config.load(_config(tmp_path), env={})
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "admin-token").write_text("")
    with pytest.raises(ConfigError, match="admin-token is empty: delete it"):
        ensure_admin_token(config)


def test_serving_warns_when_the_token_file_was_opened_up(tmp_path: Path):
    config = Config.load(_config(tmp_path), env={})
    ensure_admin_token(config)
    (tmp_path / "data" / "admin-token").chmod(0o644)
    served, notices = admin_token_for_serving(config)
    assert served.admin_token and any("readable by other users" in n for n in notices)


def test_generating_an_admin_token_can_be_turned_off(tmp_path: Path):
    config = Config.load(_config(tmp_path, "[admin]\ngenerate_token = false\n"), env={})
    served, notices = admin_token_for_serving(config)
    assert served.admin_token is None and "generate_token is false" in notices[0]
    assert not (tmp_path / "data" / "admin-token").exists()


def test_the_start_up_log_hides_credentials_in_provider_urls():
    from gateway.app import _without_userinfo

    assert _without_userinfo("https://user:secret@llm.example.com/v1") == \
        "https://***@llm.example.com/v1"
    assert _without_userinfo("https://api.openai.com/v1") == "https://api.openai.com/v1"
