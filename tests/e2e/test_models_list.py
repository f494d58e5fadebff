"""`GET /v1/models` lists what a client can call here: the default provider's own list passed
through, the models that routes name exactly, and the models of another provider's list that its
glob routes send to it. A provider that cannot list is left out, never an error."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx2
import openai
import pytest
from e2e.harness import GatewayFactory, closed_port_url, mock_providers
from mock_upstream import MockUpstream
from quart import Response
from quart_trio import QuartTrio
from servers import ThreadServer

GROQ_MODELS = ["llama-3.1-8b", "llama-3.3-70b", "whisper-large-v3"]


@pytest.fixture
def groq() -> Iterator[ThreadServer]:
    """A second OpenAI-compatible provider with a model list of its own."""

    def make() -> QuartTrio:
        app = QuartTrio("groq")

        @app.get("/openai/v1/models")
        async def models() -> Response:
            data = [{"id": m, "object": "model", "created": 1, "owned_by": "groq"}
                    for m in GROQ_MODELS]
            return Response(json.dumps({"object": "list", "data": data}),
                            content_type="application/json")

        return app

    server = ThreadServer(make).start()
    yield server
    server.stop()


def _config(mock: MockUpstream, groq_url: str) -> dict:
    return {"providers": {**mock_providers(mock.url),
                          "groq": {"kind": "openai", "base_url": groq_url + "/openai/v1",
                                   "api_key": "gsk-test"}},
            "routes": [{"model": "llama-*", "provider": "groq"},
                       {"model": "mixtral-8x7b", "provider": "groq"},
                       {"model": "claude-house", "provider": "anthropic"}]}


def test_models_lists_the_default_provider_and_the_routed_models(
        gateway_factory: GatewayFactory, mock: MockUpstream, groq: ThreadServer):
    gateway = gateway_factory(_config(mock, groq.url))
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0)
    listed = {model.id: model.owned_by for model in client.models.list()}
    # The mock's own list, passed through; the exact route; the llama models of groq's list
    # (not whisper: no route sends it there); not the anthropic route on an OpenAI list.
    assert listed == {"echo": "policy-gateway", "mixtral-8x7b": "groq",
                      "llama-3.1-8b": "groq", "llama-3.3-70b": "groq"}
    assert [r.path for r in mock.requests] == ["/v1/models"]


def test_a_provider_that_cannot_list_is_left_out(gateway_factory: GatewayFactory,
                                                 mock: MockUpstream):
    gateway = gateway_factory(_config(mock, closed_port_url()))
    response = httpx2.get(gateway.url + "/v1/models", timeout=30,
                         headers={"authorization": f"Bearer {gateway.key}"})
    assert response.status_code == 200
    assert [m["id"] for m in response.json()["data"]] == ["echo", "mixtral-8x7b"]


def test_the_anthropic_shape_gets_the_anthropic_routes(gateway_factory: GatewayFactory,
                                                       mock: MockUpstream, groq: ThreadServer):
    gateway = gateway_factory(_config(mock, groq.url))
    response = httpx2.get(gateway.url + "/v1/models", timeout=30,
                         headers={"x-api-key": gateway.key, "anthropic-version": "2023-06-01"})
    body = response.json()
    assert [m["id"] for m in body["data"]] == ["echo", "claude-house"]
    assert body["last_id"] == "claude-house"
