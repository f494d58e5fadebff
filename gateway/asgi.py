"""ASGI entry point for hypercorn workers: `gateway.asgi:app_from_env()`.

Each worker process builds its own app from the configuration file named in `GATEWAY_CONFIG`
(set by `python -m gateway serve`), so nothing is shared between processes but the database.
"""

from __future__ import annotations

import os

from quart_trio import QuartTrio

from gateway.app import create_app
from gateway.config import Config

CONFIG_ENV = "GATEWAY_CONFIG"


def app_from_env() -> QuartTrio:
    return create_app(Config.load(os.environ.get(CONFIG_ENV) or None))
