"""An attacker's pass over the remote MCP tools a provider runs for the client (Responses
`{"type": "mcp", ...}` tools), end to end: the real gateway under hypercorn, a scripted
provider on 127.0.0.1 answering with `mcp_call`, `mcp_list_tools` and `mcp_approval_request`
items (whole and streamed, the tool's result only in `response.output_item.done` as OpenAI
sends it), and the official openai SDK with strict response validation.

The remote tool is the attacker: its result carries a forbidden text in look-alike letters,
in a structured `error` instead of an `output`, at the end of a megabyte of text; the listing
offers a tool the policy refuses; an approval request asks the client to approve one. Each
answer is refused, redacted or filtered as the policy says, and the client never sees what
it may not.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from e2e.harness import UPSTREAM_OPENAI_KEY, GatewayFactory, RunningGateway
from mock_upstream import SCENARIO_HEADER
from servers import ThreadServer, answer_lifespan, read_body

from gateway.db import open_database
from gateway.identity.projects import ProjectStore

JSON = dict[str, Any]
#: Shared with tests/enforcement/test_provider_mcp_results.py (the same rules, unit-tested).
POLICY = (Path(__file__).resolve().parents[1] / "data" / "provider_tools.pol").read_text()
MCP_TOOL = {"type": "mcp", "server_label": "wiki", "server_url": "https://wiki.example/mcp",
            "require_approval": "never"}
LOOK_ALIKE = "the l\u0430unch c\u043ede is 0000"  # Cyrillic a and o
ARGUMENTS = '{"page": "Home"}'


# --- a scripted provider ---------------------------------------------------------------------


class Scripts:
    """Answers by name: the gateway forwards the scenario header, which names the script."""

    def __init__(self) -> None:
        self.answers: dict[str, list[JSON]] = {}
        self.url = ""

    def add(self, name: str, items: list[JSON]) -> dict[str, str]:
        self.answers[name] = items
        return {SCENARIO_HEADER: name}

    async def __call__(self, scope: JSON, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        body = await read_body(receive)
        name = dict(scope["headers"]).get(SCENARIO_HEADER.encode(), b"").decode()
        items = self.answers[name]
        if json.loads(body).get("stream"):
            data = b"".join(b"event: " + e["type"].encode() + b"\ndata: " + json.dumps(
                {**e, "sequence_number": n}).encode() + b"\n\n"
                for n, e in enumerate(stream_of(items)))
            kind = b"text/event-stream"
        else:
            data, kind = json.dumps(response_of(items, "completed")).encode(), b"application/json"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", kind)]})
        await send({"type": "http.response.body", "body": data})


def response_of(items: list[JSON], status: str) -> JSON:
    done = status == "completed"
    return {"id": "resp_1", "object": "response", "created_at": 1, "status": status,
            "model": "gpt-4o", "output": items if done else [], "parallel_tool_calls": True,
            "tool_choice": "auto", "tools": [MCP_TOOL], "error": None,
            "incomplete_details": None, "instructions": None, "metadata": {},
            "temperature": None, "top_p": None,
            "usage": {"input_tokens": 5, "input_tokens_details": {"cached_tokens": 0,
                                                             "cache_write_tokens": 0},
                      "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": 12} if done else None}


def stream_of(items: list[JSON]) -> Iterator[JSON]:
    """OpenAI's events for `items`: an item opens empty (`output_item.added`), then its
    arguments or text stream, and `output_item.done` carries it whole (an `mcp_call`'s result
    and an `mcp_list_tools`' tools only there)."""
    yield {"type": "response.created", "response": response_of(items, "in_progress")}
    for index, item in enumerate(items):
        at = {"output_index": index, "item_id": item["id"]}
        kind = item["type"]
        opened = {k: v for k, v in item.items() if k not in ("output", "error")}
        if kind == "mcp_call":
            opened["arguments"] = ""
        elif kind == "mcp_list_tools":
            opened["tools"] = []
        elif kind == "message":
            opened["content"] = []
        yield {"type": "response.output_item.added", "output_index": index, "item": opened}
        if kind == "mcp_call":
            yield {"type": "response.mcp_call_arguments.delta", **at, "delta": item["arguments"]}
            yield {"type": "response.mcp_call_arguments.done", **at,
                   "arguments": item["arguments"]}
            yield {"type": "response.mcp_call.completed", **at}
        elif kind == "message":
            text = item["content"][0]["text"]
            part = {"type": "output_text", "text": "", "annotations": []}
            yield {"type": "response.content_part.added", **at, "content_index": 0, "part": part}
            yield {"type": "response.output_text.delta", **at, "content_index": 0,
                   "delta": text, "logprobs": []}
            yield {"type": "response.output_text.done", **at, "content_index": 0,
                   "text": text, "logprobs": []}
            yield {"type": "response.content_part.done", **at, "content_index": 0,
                   "part": {**part, "text": text}}
        yield {"type": "response.output_item.done", "output_index": index, "item": item}
    yield {"type": "response.completed", "response": response_of(items, "completed")}


def mcp_call(output: str | None = None, *, error: Any = None, name: str = "read_page",
             server: str = "wiki") -> JSON:
    item = {"type": "mcp_call", "id": "mcp_1", "name": name, "arguments": ARGUMENTS,
            "server_label": server, "status": "completed" if error is None else "failed",
            "output": output, "error": error}
    return item


def message(text: str = "Here is what the wiki says.") -> JSON:
    return {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


# --- the gateway -----------------------------------------------------------------------------


@pytest.fixture
def scripts() -> Iterator[Scripts]:
    found = Scripts()
    with ThreadServer(lambda: found) as server:
        found.url = server.url
        yield found


@pytest.fixture
def provider_gateway(gateway_factory: GatewayFactory, tmp_path: Path,
                     scripts: Scripts) -> Iterator[tuple[RunningGateway, str]]:
    policies = tmp_path / "provider-policies"
    policies.mkdir()
    (policies / "provider_tools.pol").write_text(POLICY)
    running = gateway_factory({
        "providers": {"openai": {"kind": "openai", "base_url": scripts.url + "/v1",
                                 "api_key": UPSTREAM_OPENAI_KEY}},
        "policies": {"directory": str(policies)},
        # The server the requests' `mcp` tool points at: `tool.server == "wiki"` is this one.
        "mcp": {"servers": {"wiki": {"url": MCP_TOOL["server_url"]}}}}, plan="control")
    db = open_database(running.db_path)
    try:
        ProjectStore(db).create("proj_tools", account_id=running.account.id, name="Tools",
                                policy_id="provider_tools", known_policies={"provider_tools"})
    finally:
        db.conn.close()
    yield running, running.store.create_key(running.account.id, project_id="proj_tools")[1]


@pytest.fixture
def client(provider_gateway: tuple[RunningGateway, str]) -> Iterator[openai.OpenAI]:
    running, key = provider_gateway
    with openai.OpenAI(base_url=running.url + "/policy/v1", api_key=key, max_retries=0,
                       timeout=30, _strict_response_validation=True) as sdk:
        yield sdk


def events_of(running: RunningGateway, count: int) -> list[JSON]:
    """The enforcement events once `count` arrived (a stream's is recorded when it ends)."""
    deadline = time.monotonic() + 5
    state = running.app.extensions["gateway"]

    def found() -> list[JSON]:
        return [e for e in state.events.events if e["event_type"] == "enforcement"]

    while time.monotonic() < deadline and len(found()) < count:
        time.sleep(0.02)
    return found()



def ask(client: openai.OpenAI, scripts: Scripts, name: str, items: list[JSON],
        stream: bool) -> Any:
    """The answer the SDK hands the client (a stream's events as a list)."""
    headers = scripts.add(name, items)
    if stream:
        return list(client.responses.create(model="gpt-4o", input="What does the wiki say?",
                                            tools=[MCP_TOOL],  # type: ignore[list-item]
                                            stream=True, extra_headers=headers))
    return client.responses.create(model="gpt-4o", input="What does the wiki say?",
                                   tools=[MCP_TOOL],  # type: ignore[list-item]
                                   extra_headers=headers)


def completed(answer: Any, stream: bool) -> Any:
    """A stream's `response.completed` event (the answer itself when not streamed)."""
    if not stream:
        return answer
    [last] = [e for e in answer if e.type == "response.completed"]
    return last


REFUSED_RESULTS = {
    "look_alike": mcp_call(LOOK_ALIKE),
    "error_object": mcp_call(error={"type": "mcp_tool_execution_error",
                                    "content": [{"type": "text", "text": LOOK_ALIKE}]}),
    "error_http": mcp_call(error={"type": "http_error", "code": 500,
                                  "message": "LAUNCH CODE 0000"}),
    "huge": mcp_call("x" * 1_000_000 + " launch code 0000"),
    "tool_result": mcp_call("page Zqxw 0000"),
}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("case", sorted(REFUSED_RESULTS))
def test_a_forbidden_tool_result_never_reaches_the_client(
        client: openai.OpenAI, scripts: Scripts, provider_gateway: Any, case: str,
        stream: bool) -> None:
    seen: list[Any] = []
    with pytest.raises(openai.APIError) as refused:
        if stream:
            with client.responses.create(
                    model="gpt-4o", input="What does the wiki say?",
                    tools=[MCP_TOOL],  # type: ignore[list-item]
                    stream=True, extra_headers=scripts.add(case, [
                        REFUSED_RESULTS[case], message()])) as events:
                seen.extend(events)
        else:
            ask(client, scripts, case, [REFUSED_RESULTS[case], message()], stream=False)
    assert refused.value.code == "policy_refused"
    assert "0000" not in repr(seen) + repr(refused.value.body)
    # The stream got as far as the call, never to its result.
    assert not stream or [e.type for e in seen][-1] == "response.mcp_call.completed"
    [event] = events_of(provider_gateway[0], 1)
    reason = "PRIVATE_RESULT" if case == "tool_result" else "SECRET_OUTPUT"
    assert (event["outcome"], event["reason_code"]) == ("refused", reason)
    assert "0000" not in json.dumps(event)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_redacted_tool_result_reaches_the_client_redacted_everywhere(
        client: openai.OpenAI, scripts: Scripts, stream: bool) -> None:
    items = [mcp_call("write to ann@example.com"), message()]
    answer = ask(client, scripts, "redact", items, stream)
    if stream:
        [done] = [e.item for e in answer if e.type == "response.output_item.done"
                  and e.item.type == "mcp_call"]
        [completed] = [e.response for e in answer if e.type == "response.completed"]
        results = [done.output, completed.output[0].output]
    else:
        results = [answer.output[0].output]
    for result in results:
        assert result.startswith("write to ") and "ann@example.com" not in result


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_an_allowed_huge_result_reaches_the_client_whole(
        client: openai.OpenAI, scripts: Scripts, stream: bool) -> None:
    output = "harmless " * 200_000
    answer = ask(client, scripts, "huge_ok", [mcp_call(output), message()], stream)
    final = completed(answer, stream).response if stream else answer
    assert final.output[0].output == output and final.output[0].server_label == "wiki"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_listing_never_offers_a_tool_the_policy_always_refuses(
        client: openai.OpenAI, scripts: Scripts, stream: bool) -> None:
    listing = {"type": "mcp_list_tools", "id": "mcpl_1", "server_label": "wiki", "tools": [
        {"name": "read_page", "input_schema": {}},
        {"name": "Edit_Page", "input_schema": {}, "description": "Change a page."},
        {"name": "delete_everything", "input_schema": {}}]}
    answer = ask(client, scripts, "listing", [listing, message()], stream)
    # A stream's frames carry the `policy` object, a whole answer itself.
    last = completed(answer, stream)
    final = last.response if stream else answer
    assert [t.name for t in final.output[0].tools] == ["read_page"]
    assert (last.model_extra or {})["policy"]["tools_removed"] == [
        "Edit_Page", "delete_everything"]
    if stream:
        [done] = [e.item for e in answer if e.type == "response.output_item.done"
                  and e.item.type == "mcp_list_tools"]
        assert [t.name for t in done.tools] == ["read_page"]


def test_a_relabelled_server_still_has_its_listing_filtered(
        client: openai.OpenAI, scripts: Scripts) -> None:
    """The caller names the wiki `wiki-2`: the listing and the approval under that label are
    still the wiki's, because the request's tool points at the wiki's URL."""
    relabelled = {**MCP_TOOL, "server_label": "wiki-2"}
    listing = {"type": "mcp_list_tools", "id": "mcpl_1", "server_label": "wiki-2", "tools": [
        {"name": "read_page", "input_schema": {}}, {"name": "edit_page", "input_schema": {}}]}
    headers = scripts.add("relabelled", [listing, message()])
    answer = client.responses.create(model="gpt-4o", input="What does the wiki say?",
                                     tools=[relabelled],  # type: ignore[list-item]
                                     extra_headers=headers)
    assert [t.name for t in answer.output[0].tools] == ["read_page"]
    approval = {"type": "mcp_approval_request", "id": "mcpr_1", "name": "edit_page",
                "arguments": ARGUMENTS, "server_label": "wiki-2"}
    headers = scripts.add("relabelled_approval", [approval])
    with pytest.raises(openai.APIError) as refused:
        client.responses.create(model="gpt-4o", input="Edit the wiki.",
                                tools=[relabelled],  # type: ignore[list-item]
                                extra_headers=headers)
    assert refused.value.code == "policy_refused" and "mcpr_1" not in repr(refused.value.body)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_client_is_never_asked_to_approve_a_call_the_policy_refuses(
        client: openai.OpenAI, scripts: Scripts, stream: bool) -> None:
    approval = {"type": "mcp_approval_request", "id": "mcpr_1", "name": "edit_page",
                "arguments": ARGUMENTS, "server_label": "wiki"}
    with pytest.raises(openai.APIError) as refused:
        ask(client, scripts, "approval", [approval], stream)
    assert refused.value.code == "policy_refused" and "mcpr_1" not in repr(refused.value.body)
    # Nor to approve one whose arguments carry what the output may not.
    secret = {**approval, "name": "read_page", "arguments": '{"q": "LAUNCH CODE 0000"}'}
    with pytest.raises(openai.APIError) as refused:
        ask(client, scripts, "approval_secret", [secret], stream)
    assert refused.value.code == "policy_refused" and "0000" not in repr(refused.value.body)
    # Reading a page may be approved.
    allowed = ask(client, scripts, "approval_ok", [{**approval, "name": "read_page"}], stream)
    final = completed(allowed, stream).response if stream else allowed
    assert (final.output[0].type, final.output[0].name) == ("mcp_approval_request", "read_page")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_result_nested_deeper_than_can_be_sent_on_is_an_upstream_error(
        client: openai.OpenAI, scripts: Scripts, provider_gateway: Any, stream: bool) -> None:
    """A tool error nested 300 levels deep (orjson reads 1024, writes only 254): the answer is
    the upstream's error, as for any answer the gateway cannot read, never a 500."""
    deep: Any = "write to ann@example.com"
    for _ in range(300):
        deep = [deep]
    seen: list[Any] = []
    with pytest.raises(openai.APIError) as failed:
        if stream:
            with client.responses.create(
                    model="gpt-4o", input="What does the wiki say?",
                    tools=[MCP_TOOL],  # type: ignore[list-item]
                    stream=True, extra_headers=scripts.add("deep", [
                        mcp_call(error=deep), message()])) as events:
                seen.extend(events)
        else:
            ask(client, scripts, "deep", [mcp_call(error=deep), message()], stream=False)
    assert failed.value.code == "upstream_unavailable"
    assert "nested more than" in failed.value.message and "ann@" not in repr(seen)
    [event] = events_of(provider_gateway[0], 1)
    assert event["outcome"] == "upstream_error"
