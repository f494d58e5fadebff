"""The configuration: `Config` (settings.py), read from one TOML file and the environment
(loading.py) and checked against the schema (schema.py)."""

from gateway.config.settings import (
    ANTHROPIC,
    OPENAI,
    PROVIDER_KINDS,
    Config,
    Provider,
    Route,
    Timeouts,
)
from gateway.errors import ConfigError

__all__ = ["ANTHROPIC", "OPENAI", "PROVIDER_KINDS", "Config", "ConfigError", "Provider", "Route",
           "Timeouts"]
