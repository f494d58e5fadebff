"""The `[redis]` section and the one Redis connection a worker process shares with every store
that keeps state across replicas: quotas, rollout windows, connector leases (docs/scale-out.md).

The client is valkey-glide: native under trio, the fastest of the clients we measured, and it
speaks to Redis OSS and Valkey, standalone or Cluster (docs/scale-out.md says why). It connects
lazily and reconnects by itself, so a Redis that is down when the gateway starts, or that
restarts, is used again as soon as it answers: nothing here needs a restart. Every failure of a
call comes out as `SharedStateUnavailable`; the callers decide what it means (fail closed or
open for quotas, local state for rollout, no delivery for a connector).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import trio

from gateway.errors import ConfigError, SharedStateUnavailable

log = logging.getLogger("gateway.redis")

T = TypeVar("T")

#: Key prefixes are joined with ids and hash tags: braces would change the hash slot in Cluster.
_PREFIX = re.compile(r"[A-Za-z0-9:._-]{0,64}")


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """`[redis]`: where the state shared by replicas lives."""

    host: str
    port: int = 6379
    database: int = 0
    tls: bool = False
    username: str | None = None
    #: Read from the environment variable `password_env` names (never from the file).
    password: str | None = None
    #: Put before every key, so several deployments can share one Redis.
    key_prefix: str = "gw:"
    #: A Redis Cluster: `host:port` is one seed node, the client finds the rest.
    cluster: bool = False
    #: Longest wait for one command; past it the store counts Redis as unavailable.
    request_timeout_ms: int = 250
    connect_timeout_ms: int = 1000

    @property
    def where(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/{self.database}"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], env: Mapping[str, str]) -> RedisSettings:
        known = {"url", "username", "password_env", "key_prefix", "cluster",
                 "request_timeout_ms", "connect_timeout_ms"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"[redis]: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
        url = data.get("url")
        if not isinstance(url, str):
            raise ValueError('[redis] url is required, like "redis://host:6379/0" '
                             '(or rediss:// for TLS)')
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ValueError(f"[redis] url must be redis://host:port/db or rediss://..., "
                             f"not {url!r}")
        if parts.password:
            raise ValueError("[redis] url must not hold a password: name an environment "
                             "variable with password_env instead")
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError(f"[redis] url: the database must be a number, not {path!r}")
        password = None
        if data.get("password_env") is not None:
            name = _text(data["password_env"], "password_env")
            password = env.get(name)
            if not password:
                raise ValueError(f"[redis] password_env names {name}, which is not set")
        prefix = _text(data.get("key_prefix", "gw:"), "key_prefix")
        if not _PREFIX.fullmatch(prefix):
            raise ValueError("[redis] key_prefix: up to 64 letters, digits and : . _ -")
        timeouts = {name: _positive_int(data.get(name, default), name) for name, default in
                    (("request_timeout_ms", 250), ("connect_timeout_ms", 1000))}
        cluster = data.get("cluster", False)
        if not isinstance(cluster, bool):
            raise ValueError("[redis] cluster must be true or false")
        if cluster and path not in ("", "0"):
            raise ValueError("[redis] a Redis Cluster has only database 0")
        username = data.get("username")
        username = _text(username, "username") if username is not None else (
            unquote(parts.username) if parts.username else None)
        return cls(host=parts.hostname, port=parts.port or 6379, database=int(path or 0),
                   tls=parts.scheme == "rediss", username=username, password=password,
                   key_prefix=prefix, cluster=cluster, **timeouts)


def _text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"[redis] {name} must be a string")
    return value


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"[redis] {name} must be a positive whole number of milliseconds")
    return value


def redis_settings(config: Any) -> RedisSettings | None:
    """The `[redis]` section of `config`, None when absent, or `ConfigError`."""
    import os


    section = getattr(config, "redis", None)
    if not section:
        return None
    try:
        return RedisSettings.from_mapping(section, os.environ)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc


class RedisLink:
    """One worker's client, created on first use. `call` runs one command or script and turns
    every failure (refused, timed out, closed, script error) into `SharedStateUnavailable`."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self._client: Any = None
        #: The trio run the client belongs to: a glide client answers only in the event loop
        #: that created it (tests run several; a worker process runs one).
        self._loop: Any = None
        #: The last failure, for /readyz and logs; None while Redis answers.
        self.last_error: str | None = None

    def key(self, *parts: str) -> str:
        return self.settings.key_prefix + ":".join(parts)

    async def client(self) -> Any:
        loop = trio.lowlevel.current_trio_token()
        if self._client is None or self._loop is not loop:
            client = await self._create()
            if self._client is not None and self._loop is loop:  # another task was quicker
                await client.close()
            else:
                self._client, self._loop = client, loop
        return self._client

    async def _create(self) -> Any:
        from glide import (
            BackoffStrategy,
            GlideClient,
            GlideClientConfiguration,
            GlideClusterClient,
            GlideClusterClientConfiguration,
            Logger,
            LogLevel,
            NodeAddress,
            ServerCredentials,
        )
        from glide_shared.config import (
            AdvancedGlideClientConfiguration,
            AdvancedGlideClusterClientConfiguration,
        )

        Logger.set_logger_config(LogLevel.OFF)  # its lines are not JSON; we log failures
        s = self.settings
        common: dict[str, Any] = {
            "addresses": [NodeAddress(s.host, s.port)], "use_tls": s.tls,
            "credentials": ServerCredentials(password=s.password, username=s.username)
            if s.password else None,
            "request_timeout": s.request_timeout_ms, "lazy_connect": True,
            "client_name": "policy-gateway",
            "reconnect_strategy": BackoffStrategy(num_of_retries=6, factor=25, exponent_base=2)}
        try:
            if s.cluster:
                return await GlideClusterClient.create(GlideClusterClientConfiguration(
                    **common, advanced_config=AdvancedGlideClusterClientConfiguration(
                        connection_timeout=s.connect_timeout_ms)))
            return await GlideClient.create(GlideClientConfiguration(
                **common, database_id=s.database, advanced_config=AdvancedGlideClientConfiguration(
                    connection_timeout=s.connect_timeout_ms)))
        except Exception as exc:
            raise self._unavailable(exc) from exc

    async def call(self, command: Callable[[Any], Awaitable[T]]) -> T:
        """`await command(client)`; `SharedStateUnavailable` when Redis does not answer."""
        from glide_shared.exceptions import GlideError

        client = await self.client()
        try:
            result = await command(client)
        except GlideError as exc:
            raise self._unavailable(exc) from exc
        if self.last_error is not None:
            log.warning("Redis at %s answers again: exact shared state resumes",
                        self.settings.where)
            self.last_error = None
        return result

    def _unavailable(self, exc: BaseException) -> SharedStateUnavailable:
        message = f"{type(exc).__name__}: {exc}".strip()
        if self.last_error is None:
            log.error("Redis at %s is unavailable (%s)", self.settings.where, message)
        self.last_error = message
        return SharedStateUnavailable(f"Redis at {self.settings.where} is unavailable: {message}")

    async def ping(self) -> str:
        """"ok", or "unavailable: why" (for /readyz)."""
        try:
            await self.call(lambda client: client.ping())
        except SharedStateUnavailable as exc:
            return f"unavailable: {exc}"
        return "ok"

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with trio.CancelScope(shield=True):
                await client.close()
