"""The policy gateway server. The public entry point is `create_app(config)`."""

from gateway.app import create_app
from gateway.config import Config

__all__ = ["Config", "create_app"]
