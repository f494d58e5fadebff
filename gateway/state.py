"""Everything one worker process holds for its lifetime, opened and closed by the app."""

from __future__ import annotations

import httpx
import sqlite_utils

from gateway.config import Config
from gateway.db import open_database
from gateway.identity import IdentityCache
from gateway.upstream import Upstreams


class GatewayState:
    def __init__(self, config: Config, *, echo_transport: httpx.AsyncBaseTransport | None = None):
        self.config = config
        self.upstreams = Upstreams(config, echo_transport=echo_transport)
        self._db: sqlite_utils.Database | None = None
        self._identities: IdentityCache | None = None

    async def open(self) -> None:
        self._db = open_database(self.config.database_path)
        self._identities = IdentityCache(self._db)
        self._identities.refresh_if_changed()
        await self.upstreams.open()

    async def aclose(self) -> None:
        await self.upstreams.aclose()
        if self._db is not None:
            self._db.conn.close()
            self._db = None

    @property
    def db(self) -> sqlite_utils.Database:
        if self._db is None:
            raise RuntimeError("the gateway is not serving")
        return self._db

    @property
    def identities(self) -> IdentityCache:
        if self._identities is None:
            raise RuntimeError("the gateway is not serving")
        return self._identities
