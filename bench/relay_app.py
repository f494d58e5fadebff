"""The ceiling of our stack: a hypercorn (trio worker) ASGI app that forwards the body with httpx2
and has no gateway logic at all. The benchmark compares the gateway against it."""

from __future__ import annotations

import os

import httpx2

UPSTREAM = os.environ.get("RELAY_UPSTREAM", "http://127.0.0.1:18081")
#: `/via/PORT/rest` goes to http://127.0.0.1:PORT/rest: the slow mocks of `bench compare`.
VIA = "/via/"
_client: httpx2.AsyncClient | None = None


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    global _client
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # The gateway's defaults: a connection per stream, thousands of streams.
                _client = httpx2.AsyncClient(limits=httpx2.Limits(
                    max_connections=4096, max_keepalive_connections=1024), trust_env=False)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await _client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    assert _client is not None
    path = scope["path"]
    if path.startswith(VIA):
        port, _, rest = path[len(VIA):].partition("/")
        target = f"http://127.0.0.1:{port}/{rest}"
    else:
        target = UPSTREAM + path
    headers = {"content-type": "application/json"}
    for name, value in scope["headers"]:
        if name == b"x-bench-stream":  # the nginx mock answers a stream when it is present
            headers["x-bench-stream"] = value.decode()
    request = _client.build_request(scope["method"], target, content=body, headers=headers)
    response = await _client.send(request, stream=True)
    try:
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": [(b"content-type", response.headers["content-type"].encode())]})
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        await response.aclose()
