import pytest

from gateway.config import ANTHROPIC, OPENAI, Config
from gateway.errors import ConfigError


def test_defaults_run_with_no_file_and_no_keys():
    config = Config.load(None, env={})
    assert config.provider_for(OPENAI, "gpt-4o").is_echo
    assert config.provider_for(ANTHROPIC, "claude-x").is_echo
    assert config.max_body_bytes == 10 * 1024 * 1024


def test_sdk_environment_variables_configure_providers():
    env = {"OPENAI_API_KEY": "sk-1", "OPENAI_BASE_URL": "http://o.example/v1/",
           "ANTHROPIC_API_KEY": "sk-ant-2"}
    config = Config.load(None, env=env)
    openai = config.provider_for(OPENAI, "gpt-4o")
    assert (openai.api_key, openai.base_url, openai.is_echo) == ("sk-1", "http://o.example/v1", False)
    anthropic = config.provider_for(ANTHROPIC, None)
    assert (anthropic.api_key, anthropic.base_url) == ("sk-ant-2", "https://api.anthropic.com")


def test_model_routes_exact_and_glob(tmp_path):
    path = tmp_path / "gw.toml"
    path.write_text(
        """
[providers.openai]
api_key = "k0"
[providers.groq]
kind = "openai"
base_url = "http://groq.example/v1"
api_key_env = "GROQ_KEY"
[[routes]]
model = "llama-*"
provider = "groq"
[[routes]]
model = "mixtral"
provider = "groq"
""")
    config = Config.load(path, env={"GROQ_KEY": "g"})
    assert config.provider_for(OPENAI, "llama-3.1-8b").name == "groq"
    assert config.provider_for(OPENAI, "mixtral").name == "groq"
    assert config.provider_for(OPENAI, "mixtral-2").name == "openai"
    assert config.provider_for(OPENAI, "llama-3").api_key == "g"


@pytest.mark.parametrize("text, fragment", [
    ("[nonsense]\n", "nonsense: unknown section"),
    ("[timeouts]\nidle = -1\n", "timeouts.idle: Input should be greater than 0"),
    ("[timeouts]\nidel = 1\n", "timeouts.idel: unknown key; did you mean 'timeouts.idle'"),
    ("[providers.x]\nkind = 'grpc'\n", "providers.x.kind: Input should be 'openai' or"),
    ("[[routes]]\nmodel = 'a'\nprovider = 'nobody'\n", "unknown provider"),
    ("not toml = = =", "cannot read"),
    ("[server]\nread_timeout = 60\n", "must be longer than timeouts.total"),
    ("[timeouts]\nrequest_body = 0\n", "timeouts.request_body: Input should be greater than 0"),
    ("[limits]\nmax_concurrent_requests = 0\n", "limits.max_concurrent_requests: Input should be greater than 0"),
    ("[policies]\ninline_max_bytes = 0\n", "policies.inline_max_bytes: Input should be greater than 0"),
    ("[policies]\ninline_on_v1 = 'no'\n", "policies.inline_on_v1: Input should be a valid boolean"),
    ("[policies]\ninline_budget = 1\n", "policies.inline_budget: unknown key; did you mean"),
    ("[upstream]\nforward_headers = 'x-a'\n", "upstream.forward_headers: Input should be a valid list"),
    ("[escalation]\nallowed_urls = ['ftp://x']\n", "http\\(s\\) URL"),
    ("[escalation.targets.'https://x']\nurl = 'https://x'\n", "plain name"),
    ("[escalation.targets.ops]\nurl = 'https://x'\nheaders_env = {a = 'NOPE'}\n",
     "NOPE .* is not set"),
    ("[jwt]\nalgorithm = 'HS256'\nsecret = '" + "s" * 32 + "'\nsubject_claim = ''\n",
     "subject_claim"),
])
def test_bad_configuration_is_a_clear_error(tmp_path, text, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        Config.load(path, env={})


def test_the_documented_configuration_loads():
    """docs/configuration.md shows every key; it must stay a valid configuration."""
    import re
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    block = re.search(r"```toml\n(.*?)```", doc, re.S).group(1)
    config = Config.from_mapping(
        __import__("tomllib").loads(block),
        env={"GROQ_API_KEY": "g", "GATEWAY_JWT_SECRET": "s" * 32,
             "ONCALL_WEBHOOK_AUTH": "Bearer hook", "GITHUB_MCP_AUTH": "Bearer gh"},
    )
    assert config.provider_for(OPENAI, "llama-3").name == "groq"
    github = config.mcp_servers["github"]
    assert github.headers == (("authorization", "Bearer gh"),)
    assert not github.tool_permitted("delete_repo") and github.tool_permitted("search_code")
    assert config.always_blocked_categories == ("self-harm/instructions", "sexual/minors")
    assert config.jwt["audience"] == "policy-gateway"
    from gateway.events.connector_settings import connector_settings
    from gateway.events.store import EventSettings
    from gateway.quota.limits import QuotaSettings

    events = EventSettings.from_mapping(config.events)
    assert [c.name for c in connector_settings(events.connectors)] == ["audit-file"]
    assert config.admin_token is None  # GATEWAY_ADMIN_TOKEN is not in this environment
    quotas = QuotaSettings.from_mapping(config.quotas)
    assert quotas.reservation_ttl_seconds == 960
    from gateway.policy.escalation import EscalationSettings
    from gateway.policy.inline import InlineBudget

    escalation = EscalationSettings.from_mapping(config.escalation,
                                                 {"ONCALL_WEBHOOK_AUTH": "Bearer hook"})
    assert escalation.targets["oncall"].headers == {"authorization": "Bearer hook"}
    assert escalation.shown("https://hooks.example.com/policy/escalations") == "listed-url"
    assert InlineBudget.from_mapping(config.inline_policy).max_bytes == 65536
    assert (config.timeouts.request_body, config.max_concurrent_requests) == (30, 4096)
    assert config.server_read_timeout == 960
    assert (quotas.store, quotas.on_store_error) == ("sqlite", "closed")
    from gateway.redis_link import RedisSettings

    redis = RedisSettings.from_mapping(config.redis, {})
    assert (redis.host, redis.port, redis.key_prefix) == ("127.0.0.1", 6379, "gw:")
    assert len(quotas.configured_limits("proj_support_bot")[0]) == 2


def test_serving_capacity_comes_from_the_configuration(tmp_path):
    from gateway.serve import hypercorn_config

    defaults = hypercorn_config(Config.load(env={}), "127.0.0.1:8080", 1)
    # Sized for thousands of streams per worker: hypercorn's own default backlog is 100.
    assert (defaults.backlog, defaults.keep_alive_timeout) == (4096, 75.0)
    path = tmp_path / "gateway.toml"
    path.write_text("[server]\nbacklog = 8192\nkeep_alive_timeout = 5\n"
                    "[limits]\nmax_upstream_connections = 64\n"
                    "upstream_keepalive_connections = 16\nupstream_keepalive_seconds = 2.5\n")
    config = Config.load(path, env={})
    hyper = hypercorn_config(config, "127.0.0.1:9000", 2)
    assert (hyper.backlog, hyper.keep_alive_timeout, hyper.bind, hyper.workers) == (
        8192, 5.0, ["127.0.0.1:9000"], 2)
    assert (config.max_connections, config.keepalive_connections,
            config.keepalive_seconds) == (64, 16, 2.5)


@pytest.mark.parametrize("text", [
    "[server]\nbacklog = 0\n", "[limits]\nupstream_keepalive_connections = 0\n",
    "[limits]\nupstream_keepalive_seconds = -1\n"])
def test_capacity_settings_must_be_positive(tmp_path, text):
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        Config.load(path, env={})
