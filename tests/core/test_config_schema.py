"""The configuration schema: an unknown key anywhere is an error naming its full path with a
"did you mean"; a wrong type names the key and the type expected; the environment follows one
rule; `check-config` and `config-schema` work as docs/configuration.md says."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gateway.config import Config
from gateway.config.loading import OVERRIDABLE, override_variables
from gateway.config.schema import SECTIONS
from gateway.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {"GROQ_API_KEY": "g", "GATEWAY_JWT_SECRET": "s" * 32,
           "ONCALL_WEBHOOK_AUTH": "Bearer hook", "GITHUB_MCP_AUTH": "Bearer gh"}

#: (TOML with one misspelled key, the message expected): at least one for every section.
UNKNOWN_KEYS = [
    ("[server]\nprot = 1\n", "server.prot: unknown key; did you mean 'server.port'?"),
    ("[database]\npth = 'x.db'\n", "database.pth: unknown key; did you mean 'database.path'?"),
    ("[policies]\ndirectry = 'p'\n",
     "policies.directry: unknown key; did you mean 'policies.directory'?"),
    ("[limits]\nmax_body_byte = 1\n",
     "limits.max_body_byte: unknown key; did you mean 'limits.max_body_bytes'?"),
    ("[timeouts]\nidel = 3\n", "timeouts.idel: unknown key; did you mean 'timeouts.idle'?"),
    ("[moderation]\nalways_blockd = ['x']\n",
     "moderation.always_blockd: unknown key; did you mean 'moderation.always_blocked'?"),
    ("[moderation]\nclasifier = 'openai'\n",
     "moderation.clasifier: unknown key; did you mean 'moderation.classifier'?"),
    ("[moderation.openai]\nbase_ur = 'http://x'\n",
     "moderation.openai.base_ur: unknown key; did you mean 'moderation.openai.base_url'?"),
    ("[providers.groq]\nkind = 'openai'\napi_key_evn = 'K'\n",
     "providers.groq.api_key_evn: unknown key; did you mean 'providers.groq.api_key_env'?"),
    ("[[routes]]\nmodel = 'a'\nprovder = 'openai'\n",
     "routes[0].provder: unknown key; did you mean 'routes[0].provider'?"),
    ("[admin]\ntoken_evn = 'X'\n", "admin.token_evn: unknown key; did you mean 'admin.token_env'?"),
    ("[jwt]\nsecret_env = 'S'\naudiance = 'a'\n",
     "jwt.audiance: unknown key; did you mean 'jwt.audience'?"),
    ("[[jwt.keys]]\nalgorithm = 'HS256'\nsecret_evn = 'S'\n",
     "jwt.keys[0].secret_evn: unknown key; did you mean 'jwt.keys[0].secret_env'?"),
    ("[events]\nqueue_capcity = 5\n",
     "events.queue_capcity: unknown key; did you mean 'events.queue_capacity'?"),
    ("[[events.connectors]]\nname = 'a'\ntype = 'jsonl'\npaht = 'x'\n",
     "events.connectors[0].paht: unknown key; did you mean 'events.connectors[0].path'?"),
    ("[quotas]\ndefault_output_token = 5\n",
     "quotas.default_output_token: unknown key; did you mean 'quotas.default_output_tokens'?"),
    ("[quotas]\nbudget = { request = { daily = 5 } }\n",
     "quotas.budget.request: unknown key; did you mean 'quotas.budget.requests'?"),
    ("[escalation]\nallowed_url = ['https://x']\n",
     "escalation.allowed_url: unknown key; did you mean 'escalation.allowed_urls'?"),
    ("[escalation.targets.ops]\nurl = 'https://x'\nheader_env = {}\n",
     "escalation.targets.ops.header_env: unknown key; did you mean "
     "'escalation.targets.ops.headers_env'?"),
    ("[mcp.servers.docs]\nurl = 'https://mcp.example.com/mcp'\nallowed_tool = ['a']\n",
     "mcp.servers.docs.allowed_tool: unknown key; did you mean 'mcp.servers.docs.allowed_tools'?"),
    ("[upstream]\nforward_header = ['x-a']\n",
     "upstream.forward_header: unknown key; did you mean 'upstream.forward_headers'?"),
    ("[redis]\nurl = 'redis://127.0.0.1:6379/0'\nkey_prefx = 'gw:'\n",
     "redis.key_prefx: unknown key; did you mean 'redis.key_prefix'?"),
    ("[quotas]\nuser_quota = { tokens = { dayly = 5 } }\n",
     "quotas.user_quota.tokens.dayly: unknown key; did you mean 'quotas.user_quota.tokens.daily'?"),
    ("[quotas.projects.proj_a]\nbudjet = {}\n",
     "quotas.projects.proj_a.budjet: unknown key; did you mean 'quotas.projects.proj_a.budget'?"),
    ("[timeout]\nidle = 3\n", "timeout: unknown section; did you mean 'timeouts'?"),
    # Names the user chose stay in the path, whatever characters they hold.
    ("[providers.my-groq]\nkind = 'openai'\nbase_ur = 'x'\n",
     "providers.my-groq.base_ur: unknown key; did you mean 'providers.my-groq.base_url'?"),
]


def _load(text: str, env: dict[str, str] | None = None) -> Config:
    return Config.from_mapping(tomllib.loads(text), env=env or {})


@pytest.mark.parametrize("text, message", UNKNOWN_KEYS)
def test_an_unknown_key_names_its_path_and_what_was_meant(text: str, message: str):
    with pytest.raises(ConfigError) as refused:
        _load(text)
    assert f"  {message}" in str(refused.value).splitlines(), str(refused.value)


def test_every_section_has_an_unknown_key_case():
    covered = {re.match(r"\[+([a-z_]+)", text).group(1) for text, _ in UNKNOWN_KEYS}
    assert set(SECTIONS) <= covered


@pytest.mark.parametrize("text, message", [
    ("[server]\nport = '80'\n", "server.port: Input should be a valid integer (got str '80')"),
    ("[server]\nworkers = 0\n", "server.workers: Input should be greater than 0 (got int 0)"),
    ("[server]\nlog_level = 'loud'\n", "server.log_level: Input should be 'DEBUG', 'INFO'"),
    ("[timeouts]\nidle = 'fast'\n", "timeouts.idle: Input should be a valid number"),
    ("[timeouts]\ntotal = nan\n", "timeouts.total: Input should be a finite number"),
    ("[moderation]\nalways_blocked = 'hate'\n",
     "moderation.always_blocked: Input should be a valid list (got str 'hate')"),
    ("[providers.x]\nkind = 'openai'\napi_key = 3\n",
     "providers.x.api_key: Input should be a valid string (got int 3)"),
    ("[quotas]\nbudget = { requests = { daily = 1.5 } }\n",
     "quotas.budget.requests.daily: Input should be a valid integer (got float 1.5)"),
    ("[jwt]\nsecret_env = 'S'\nrequire_exp = 'yes'\n",
     "jwt.require_exp: Input should be a valid boolean (got str 'yes')"),
    ("[events]\nbatch_size = true\n",
     "events.batch_size: Input should be a valid integer (got bool True)"),
    ("routes = 'x'\n", "routes: Input should be a valid list (got str 'x')"),
    ("[jwt]\nsecret_env = 'S'\nissuer = 3\n",
     "jwt.issuer: Input should be a valid string (got int 3)"),
    ("[jwt]\nsecret_env = 'S'\nissuer = 3\n",
     "jwt.issuer: Input should be a valid list (got int 3)"),
    ("[jwt.grants]\nalice = 7\n", "jwt.grants.alice: Input should be a valid list (got int 7)"),
    ("[jwt.grants]\n'ops-bot' = ['p', 3]\n",
     "jwt.grants.ops-bot[1]: Input should be a valid string (got int 3)"),
    ("[server]\nhost = [" + ", ".join(["'x'"] * 40) + "]\n",
     "server.host: Input should be a valid string (got list ['x', 'x', 'x', 'x', 'x', "),
])
def test_a_wrong_type_names_the_key_and_the_type_expected(text: str, message: str):
    with pytest.raises(ConfigError) as refused:
        _load(text)
    assert message in str(refused.value), str(refused.value)


def test_every_problem_is_listed_at_once():
    with pytest.raises(ConfigError) as refused:
        _load("[server]\nport = 'x'\nhots = 'a'\n[timeouts]\nidel = 1\n")
    assert len(str(refused.value).splitlines()) == 4  # the heading and three problems


def test_the_environment_follows_one_rule():
    env = {"GATEWAY_SERVER_PORT": "9001", "GATEWAY_DATABASE_PATH": "/srv/2024",
           "GATEWAY_TIMEOUTS_IDLE": "7.5", "GATEWAY_MODERATION_ALWAYS_BLOCKED": '["hate"]',
           "GATEWAY_EVENTS_BATCH_SIZE": "20"}
    config = _load("[server]\nport = 8000\n[database]\npath = 'file.db'\n", env)
    assert (config.port, config.database_path, config.timeouts.idle) == (9001, "/srv/2024", 7.5)
    assert config.always_blocked_categories == ("hate",)
    assert config.events["batch_size"] == 20
    assert config.policies_dir == "/srv/policies"  # the data directory follows the database
    # The older names still work; the rule's own name wins over them.
    assert _load("", {"GATEWAY_DATABASE": "old.db"}).database_path == "old.db"
    assert _load("", {"GATEWAY_DATABASE": "old.db",
                      "GATEWAY_DATABASE_PATH": "new.db"}).database_path == "new.db"
    assert _load("", {"GATEWAY_POLICIES": "pols"}).policies_dir == "pols"
    with pytest.raises(ConfigError) as refused:
        _load("", {"GATEWAY_SERVER_PORT": "eighty"})
    assert str(refused.value).splitlines()[1] == (
        "  server.port: Input should be a valid integer (got str 'eighty') "
        "(set by GATEWAY_SERVER_PORT)")
    names = override_variables()
    assert {section for section, _ in names.values()} == set(OVERRIDABLE)
    assert "GATEWAY_EVENTS_CONNECTORS" not in names and "GATEWAY_QUOTAS_PROJECTS" not in names


def _gateway(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True,
                          text=True, timeout=60, env={**clean, **(env or {})}, cwd=ROOT)


def test_check_config_passes_the_documented_example_and_refuses_a_typo(tmp_path: Path):
    doc = (ROOT / "docs" / "configuration.md").read_text()
    example = tmp_path / "gateway.toml"
    example.write_text(re.search(r"```toml\n(.*?)```", doc, re.S).group(1))
    done = _gateway("check-config", str(example), env=SECRETS)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{example}: valid\n")
    assert "route      llama-* -> groq" in done.stdout

    typo = tmp_path / "typo.toml"
    typo.write_text("[moderation]\nalways_blockd = ['hate']\n")
    done = _gateway("check-config", str(typo))
    assert done.returncode == 1
    assert "moderation.always_blockd: unknown key; did you mean " \
           "'moderation.always_blocked'?" in done.stderr


def test_config_schema_is_the_json_schema_of_the_file():
    done = _gateway("config-schema")
    assert done.returncode == 0, done.stderr
    schema = json.loads(done.stdout)
    assert set(schema["properties"]) == set(SECTIONS)
    assert schema["additionalProperties"] is False
    server = schema["$defs"]["ServerSection"]
    assert server["additionalProperties"] is False
    assert server["properties"]["port"]["type"] == "integer"


def test_the_schema_defaults_are_the_ones_the_code_uses():
    """The JSON Schema shows defaults to editors: they must be the parsers' own."""
    from gateway.config.schema import ConnectorSection, EventsSection
    from gateway.events.connector_settings import ConnectorSettings
    from gateway.events.store import EventSettings

    parsed = ConnectorSettings.from_mapping({"name": "a", "type": "jsonl", "path": "x"})
    for name, info in ConnectorSection.model_fields.items():
        if not info.is_required() and name != "path":
            assert info.get_default(call_default_factory=True) == getattr(parsed, name), name
    events = EventSettings()
    for name, info in EventsSection.model_fields.items():
        default = info.get_default(call_default_factory=True)
        assert default == getattr(events, name) or (name == "connectors" and default == []), name
    from gateway.config.schema import QuotasSection
    from gateway.quota.limits import QuotaSettings

    assert QuotasSection().default_output_tokens == QuotaSettings().default_output_tokens
    assert QuotasSection().threads == QuotaSettings().threads
    config = Config.load(None, env={})
    assert (config.port, config.workers, config.timeouts.idle, config.max_body_bytes) == (
        8080, 1, 120.0, 10 * 1024 * 1024)
