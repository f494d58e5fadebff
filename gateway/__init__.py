"""The policy gateway server. The public entry point is `create_app(config)`."""

import gateway.lean_imports  # noqa: F401  # first: keeps numpy out of every worker
from gateway.app import create_app
from gateway.config import Config

__all__ = ["Config", "create_app"]
