"""The one I/O seam towards providers: building upstream requests and running one exchange.

`Upstreams` owns the pooled `httpx2.AsyncClient`s (one per provider, one wired to the in-process
echo upstream) for the app's lifetime. `Exchange` is one call: it maps every httpx2
failure to `UpstreamUnavailable` / `UpstreamTimeout`, applies the idle and total timeouts itself
(httpx2 has no total timeout) together with the shutdown cut of a stream, and always closes the
upstream response, also when cancelled, so a client disconnect reaches the provider at once.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import Any, cast

import httpx2
import orjson
import trio

from gateway.adapters.base import Adapter
from gateway.config import ANTHROPIC, OPENAI, Config, Provider, Timeouts
from gateway.errors import (
    MalformedStream,
    ShuttingDown,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.http.draining import Draining, cut_error
from gateway.upstream.sse import Frame, SSEParser

ECHO_ORIGIN = "http://echo.invalid"
DEFAULT_ANTHROPIC_VERSION = "2023-06-01"

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
#: The request headers forwarded upstream, by provider kind: the ones each provider's API
#: defines for its clients. Anything else a client sends stays here, so a client cannot choose
#: the provider context the gateway's own key acts in (`openai-organization`,
#: `openai-project`), spoof its origin (`x-forwarded-for`) or pass gateway-only headers on.
#: httpx2 sets its own Host, Content-Length and Accept-Encoding; the credential is the
#: gateway's. More can be allowed with `[upstream] forward_headers` (docs/configuration.md).
FORWARDED_REQUEST_HEADERS: Mapping[str, frozenset[str]] = {
    OPENAI: frozenset({"content-type", "accept", "user-agent", "idempotency-key",
                       "openai-beta"}),
    ANTHROPIC: frozenset({"content-type", "accept", "user-agent", "idempotency-key",
                          "anthropic-version", "anthropic-beta"}),
}
#: Not relayed to the client: transport headers describing the upstream's own encoding of a body
#: that httpx2 has already decoded, and headers the server adds itself.
_DROP_RESPONSE = HOP_BY_HOP | {"content-length", "content-encoding", "date", "server"}
#: `Content-Encoding` values whose body is the content itself.
_UNENCODED = frozenset({"", "identity"})


def _named_by_connection(values: list[str]) -> set[str]:
    """Headers the sender declared hop-by-hop by listing them in `Connection` (RFC 9110 7.6.1)."""
    return {token.strip().lower() for value in values for token in value.split(",")
            if token.strip()}


def forwardable_request_headers(headers: Mapping[str, str], kind: str,
                                extra: frozenset[str] = frozenset()) -> dict[str, str]:
    """The client's headers a provider of `kind` gets: its API's allowlist plus `extra`,
    never a hop-by-hop header (nor one the client's `Connection` names)."""
    allowed = (FORWARDED_REQUEST_HEADERS[kind] | extra) - HOP_BY_HOP - _named_by_connection(
        [headers.get("connection", "")])
    return {k: v for k, v in headers.items() if k in allowed}


def relayable_response_headers(headers: httpx2.Headers) -> list[tuple[str, str]]:
    """The upstream's response headers the client gets, as latin-1 text of their bytes: they
    go out byte for byte (httpx2's text would be UTF-8 where the bytes allow it, which the
    response head cannot carry)."""
    raw = [(name.decode("latin-1").lower(), value.decode("latin-1"))
           for name, value in headers.raw]
    drop = _DROP_RESPONSE | _named_by_connection(
        [value for name, value in raw if name == "connection"])
    return [(name, value) for name, value in raw if name not in drop]


class Upstreams:
    """The pooled clients. Open in `before_serving`, close in `after_serving`."""

    def __init__(self, config: Config, echo_transport: httpx2.AsyncBaseTransport | None = None,
                 transport: httpx2.AsyncBaseTransport | None = None):
        self.config = config
        self._echo_transport = echo_transport
        #: Replaces the network for tests (`httpx2.MockTransport`); None: the real network.
        self._transport = transport
        # Credentials and hop-by-hop headers can never be allowed by configuration.
        self._extra_headers = frozenset(config.forward_headers) - HOP_BY_HOP - {
            "authorization", "x-api-key", "host", "content-length", "cookie"}
        #: One pool per provider (see `open`), by provider name.
        self._network: dict[str, httpx2.AsyncClient] = {}
        self._echo: httpx2.AsyncClient | None = None

    async def open(self) -> None:
        timeouts = self.config.timeouts
        limits = httpx2.Limits(
            max_connections=self.config.max_connections,
            max_keepalive_connections=min(self.config.keepalive_connections,
                                          self.config.max_connections),
            keepalive_expiry=self.config.keepalive_seconds,
        )
        # httpx2's read timeout doubles as our idle timeout; the relay also enforces it itself
        # together with the total deadline.
        timeout = httpx2.Timeout(connect=timeouts.connect, read=timeouts.idle, write=timeouts.idle,
                                pool=timeouts.connect)
        # A pool per provider: httpcore2 walks every connection of a pool for each request it
        # sends, so a provider whose streams leave hundreds of connections open must not make
        # every other provider's requests slower (measured in docs/performance.md).
        self._network = {
            provider.name: httpx2.AsyncClient(timeout=timeout, limits=limits, trust_env=False,
                                              follow_redirects=False, transport=self._transport)
            for provider in self.config.providers.values() if not provider.is_echo}
        transport = self._echo_transport
        if transport is None and any(p.is_echo for p in self.config.providers.values()):
            from gateway.upstream.echo import EchoTransport

            transport = EchoTransport()
        if transport is not None:
            self._echo = httpx2.AsyncClient(transport=transport, timeout=timeout)

    async def aclose(self) -> None:
        for client in (*self._network.values(), self._echo):
            if client is not None:
                with trio.CancelScope(shield=True):
                    await client.aclose()

    def client_for(self, provider: Provider) -> httpx2.AsyncClient:
        client = self._echo if provider.is_echo else self._network.get(provider.name)
        if client is None:
            raise RuntimeError(f"Upstreams.open() was not called, or {provider.name!r} is no "
                               f"configured provider")
        return client

    def build_request(self, provider: Provider, method: str, path: str,
                      headers: Mapping[str, str], content: bytes | None = None) -> httpx2.Request:
        """An upstream request carrying the provider's credential in the provider's own way."""
        out = forwardable_request_headers(headers, provider.kind, self._extra_headers)
        if provider.kind == ANTHROPIC:
            out.setdefault("anthropic-version", DEFAULT_ANTHROPIC_VERSION)
            if provider.api_key:
                out["x-api-key"] = provider.api_key
        elif provider.api_key:
            out["authorization"] = f"Bearer {provider.api_key}"
        base = provider.base_url if not provider.is_echo else _echo_base(provider)
        client = self.client_for(provider)
        # Header values were decoded as latin-1 from the client's bytes: encoding them the same
        # way relays them byte for byte (httpx2 would refuse non-ASCII text otherwise).
        return client.build_request(method, base + path, content=content,
                                    headers=httpx2.Headers(out, encoding="latin-1"))


def _echo_base(provider: Provider) -> str:
    # Keep the path layout of the real provider so the echo sees the same URLs.
    return ECHO_ORIGIN if provider.kind == ANTHROPIC else ECHO_ORIGIN + "/v1"


class Exchange:
    """One upstream call, from sending the request to closing the response."""

    def __init__(self, client: httpx2.AsyncClient, request: httpx2.Request, timeouts: Timeouts):
        self._client = client
        self._request = request
        self._idle = timeouts.idle
        self._total = timeouts.total
        self._deadline = math.inf
        self._draining: Draining | None = None
        self.response: httpx2.Response | None = None
        #: The cancel scope of the latest upstream read (`gateway.http.draining.ExchangeReads`).
        self.read_scope: trio.CancelScope | None = None

    async def start(self, draining: Draining | None = None) -> httpx2.Response:
        """Send the request and wait for the response headers.

        With `draining` (the serving app's), the exchange registers its reads there until
        `aclose`: one still waiting when the shutdown grace period ends raises `ShuttingDown`,
        so a whole answer that has not come gets a 503 instead of a cut connection."""
        self._deadline = trio.current_time() + self._total
        self._draining = draining
        if draining is not None:
            draining.exchanges.add(self)
        with self._read_scope() as scope:
            try:
                self.response = await self._client.send(self._request, stream=True)
            except httpx2.TimeoutException as exc:
                if isinstance(exc, httpx2.ConnectTimeout | httpx2.PoolTimeout):
                    raise UpstreamUnavailable(f"Could not connect to the upstream: {exc!r}"
                                              ) from None
                raise UpstreamTimeout("The upstream did not answer in time.") from None
            except httpx2.RequestError as exc:
                raise UpstreamUnavailable(f"The upstream is unreachable: {_describe(exc)}"
                                          ) from None
        if scope.cancelled_caught:
            raise _whole_answer_deadline_error(draining, "The upstream did not answer in time.")
        assert self.response is not None
        return self.response

    @property
    def is_event_stream(self) -> bool:
        assert self.response is not None
        return self.response.headers.get("content-type", "").startswith("text/event-stream")

    async def read_body(self) -> bytes:
        """The whole body. One cancel scope for all of it, whose deadline each chunk moves on:
        the idle, total and shutdown deadlines of every read."""
        chunks = []
        async with aclosing(_body_chunks(self._response())) as iterator:
            with self._read_scope() as scope:
                try:
                    async for chunk in iterator:
                        chunks.append(chunk)
                        scope.deadline = self._next_read_deadline()
                except (httpx2.RequestError, httpx2.StreamError) as exc:
                    raise _read_failure(exc) from None
            if scope.cancelled_caught:
                raise _whole_answer_deadline_error(self._draining,
                                                   "The upstream stopped sending in time.")
        return b"".join(chunks)

    async def frames(self, adapter: Adapter, draining: Draining | None = None
                     ) -> AsyncGenerator[list[tuple[Frame, Any]], None]:
        """Validated frames with their decoded `data` JSON (None for `[DONE]` and comments),
        in batches: the frames completed by one upstream read, so they go out in one write.

        Raises `UpstreamUnavailable` on a reset, a malformed frame or a stream that ends before
        the API's terminal frame; `UpstreamTimeout` on the idle or total deadline;
        `ShuttingDown` when the shutdown grace period of `draining` ends during a read.
        """
        # One loop and one cancel scope per read: this runs for every batch of every stream, and
        # each generator layer and cancel scope costs more than parsing the batch. The scope's
        # deadline is the nearest of the idle, total and shutdown deadlines; `Draining.begin`
        # moves it through `read_scope` when the grace period starts during the read.
        parser = SSEParser()
        finished = False
        chunks = _body_chunks(self._response())
        if draining is not None:
            self._draining = draining
            draining.exchanges.add(self)
        try:
            async with aclosing(chunks):
                while True:
                    with self._read_scope() as scope:
                        try:
                            chunk = await chunks.__anext__()
                        except StopAsyncIteration:
                            break
                        except (httpx2.RequestError, httpx2.StreamError) as exc:
                            raise _read_failure(exc) from None
                    if scope.cancelled_caught:
                        raise _deadline_error(draining)
                    try:
                        frames = parser.feed(chunk)
                    except MalformedStream as exc:
                        raise UpstreamUnavailable(
                            f"Malformed event stream from the upstream: {exc}") from None
                    if not frames:
                        continue
                    batch = [(frame, _decode_payload(frame)) for frame in frames]
                    finished = finished or any(adapter.is_terminal(frame) for frame in frames)
                    yield batch
        finally:
            self.read_scope = None
            if draining is not None:
                draining.exchanges.discard(self)
        if parser.close() or not finished:
            raise UpstreamUnavailable("The upstream stream ended before it was complete.")

    async def aclose(self) -> None:
        """Close the upstream response. Shielded: it must run even when we are cancelled."""
        if self._draining is not None:
            self._draining.exchanges.discard(self)
        if self.response is not None:
            with trio.move_on_after(5) as scope:
                scope.shield = True
                await self.response.aclose()

    def _response(self) -> httpx2.Response:
        if self.response is None:
            raise RuntimeError("Exchange.start() was not called")
        return self.response

    def _next_read_deadline(self) -> float:
        """The nearest of the idle deadline of a read starting now, the total deadline and the
        shutdown cut."""
        cut_at = self._draining.cut_at if self._draining is not None else math.inf
        return min(trio.current_time() + self._idle, self._deadline, cut_at)

    def _read_scope(self) -> trio.CancelScope:
        """A cancel scope for the next read, where `Draining.begin` finds it."""
        scope = self.read_scope = trio.CancelScope(deadline=self._next_read_deadline())
        return scope


def _read_failure(exc: httpx2.RequestError | httpx2.StreamError) -> UpstreamError:
    """What a failed read of the upstream's body becomes."""
    if isinstance(exc, httpx2.TimeoutException):
        return UpstreamTimeout("The upstream stopped sending in time.")
    return UpstreamUnavailable(f"The upstream connection failed mid-response: {_describe(exc)}")


def _whole_answer_deadline_error(draining: Draining | None, timeout: str
                                 ) -> UpstreamTimeout | ShuttingDown:
    """What a cancelled wait for a whole answer (its head or its body) becomes."""
    if draining is not None and trio.current_time() >= draining.cut_at:
        return ShuttingDown("The gateway is shutting down and could not finish this request "
                            "in its grace period; retry the request.")
    return UpstreamTimeout(timeout)


def _deadline_error(draining: Draining | None) -> UpstreamTimeout | ShuttingDown:
    """What a read cancelled by its deadline becomes: the shutdown cut once the grace period
    has ended, else the idle or total timeout."""
    if draining is not None and trio.current_time() >= draining.cut_at:
        return cut_error()
    return UpstreamTimeout("The upstream stopped sending in time.")


def _body_chunks(response: httpx2.Response) -> AsyncGenerator[bytes, None]:
    """The body, as the async generator httpx2 returns (typed as one, for `aclosing`): the raw
    bytes when the upstream did not encode them (no decoder per read), else the decoded ones.
    A body httpx2 has already read (an in-memory test transport's) only has the latter."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    raw = encoding in _UNENCODED and not response.is_stream_consumed
    body = response.aiter_raw() if raw else response.aiter_bytes()
    return cast(AsyncGenerator[bytes, None], body)


def _decode_payload(frame: Frame) -> Any:
    if frame.data is None or frame.is_done:
        return None
    try:
        payload = orjson.loads(frame.data)
    except orjson.JSONDecodeError:
        raise UpstreamUnavailable("The upstream sent an event that is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise UpstreamUnavailable("The upstream sent an event that is not a JSON object.")
    return payload


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
