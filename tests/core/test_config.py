import pytest

from gateway.config import ANTHROPIC, OPENAI, Config, ConfigError


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
    ("[nonsense]\n", "unknown section"),
    ("[timeouts]\nidle = -1\n", "positive"),
    ("[timeouts]\nbogus = 1\n", "invalid configuration"),
    ("[providers.x]\nkind = 'grpc'\n", "kind must be"),
    ("[[routes]]\nmodel = 'a'\nprovider = 'nobody'\n", "unknown provider"),
    ("not toml = = =", "cannot read"),
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
             "GITHUB_MCP_AUTH": "Bearer gh"},
    )
    assert config.provider_for(OPENAI, "llama-3").name == "groq"
    github = config.mcp_servers["github"]
    assert github.headers == (("authorization", "Bearer gh"),)
    assert not github.tool_permitted("delete_repo") and github.tool_permitted("search_code")
    assert config.always_blocked_categories == ("self-harm/instructions", "sexual/minors")
    assert config.jwt["audience"] == "policy-gateway"
    from gateway.events.connectors import connector_settings
    from gateway.events.store import EventSettings
    from gateway.quota.limits import QuotaSettings

    events = EventSettings.from_mapping(config.events)
    assert [c.name for c in connector_settings(events.connectors)] == ["audit-file"]
    assert config.admin_token is None  # GATEWAY_ADMIN_TOKEN is not in this environment
    quotas = QuotaSettings.from_mapping(config.quotas)
    assert quotas.reservation_ttl_seconds == 960
    assert len(quotas.configured_limits("proj_support_bot")[0]) == 2
