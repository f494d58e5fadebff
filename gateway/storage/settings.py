"""The `[database]` keys that select and reach PostgreSQL (the SQLite file needs only `path`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gateway.errors import ConfigError


@dataclass(frozen=True, slots=True)
class PostgresSettings:
    url: str
    #: From the environment variable `[database] password_env` names; None lets libpq use its
    #: own sources (PGPASSWORD, ~/.pgpass).
    password: str | None = None
    pool_min_size: int = 1
    pool_max_size: int = 4
    connect_timeout: float = 5.0
    poll_interval: float = 0.25

    @property
    def where(self) -> str:
        """host:port/db, for messages: never the user or the password."""
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port or 5432}/{parts.path.strip('/')}"

    @property
    def conninfo(self) -> str:
        from psycopg.conninfo import make_conninfo

        extra: dict[str, Any] = {"connect_timeout": max(1, round(self.connect_timeout)),
                                 "application_name": "policy-gateway"}
        if self.password is not None:
            extra["password"] = self.password
        return make_conninfo(self.url, **extra)

    @classmethod
    def from_section(cls, section: Mapping[str, Any], env: Mapping[str, str]
                     ) -> PostgresSettings | None:
        """None when `url` is not set (SQLite). `section` is the checked `[database]` table."""
        url = section.get("url")
        if not url:
            return None
        password = None
        name = section.get("password_env")
        if name:
            password = env.get(name)
            if not password:
                raise ConfigError(f"[database] password_env names {name}, which is not set")
        return cls(url=url, password=password,
                   pool_min_size=int(section.get("pool_min_size", 1)),
                   pool_max_size=int(section.get("pool_max_size", 4)),
                   connect_timeout=float(section.get("connect_timeout", 5.0)),
                   poll_interval=float(section.get("poll_interval", 0.25)))
