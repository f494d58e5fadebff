"""An attacker's pass over the answers on the governed MCP route (`/policy/mcp/NAME`): the MCP
server (hostile, or an honest one that reads ids as JavaScript doubles) shapes its answer so
that the gateway cannot recognise it, hoping the gateway relays it raw, past the output rules,
and gives the `tool_calls` quota back. The server here is scripted per test; the checks are on
what the client gets, what the server received, the call's event and the quota.

Policy: the repository's `mcp_tools` (e-mails in tool results and phone numbers in arguments
are redacted), with a budget of two tool calls a day.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from e2e.harness import GatewayFactory, RunningGateway
from servers import ThreadServer, answer_lifespan, read_body

from gateway.db import open_database
from gateway.identity.projects import ProjectStore

REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"
GOVERNED = "/policy/mcp/hostile"
EMAIL = "jane.doe@example.com"
PHONE = "+1 415 555 0100"
#: An id a JavaScript server reads as 9007199254740992 (2^53 + 1 is no double).
BIG_ID = 9007199254740993
SSE = b"text/event-stream"
JSON_TYPE = b"application/json"
#: The server's answer to one request: (content type, body).
Script = Callable[[dict[str, Any]], tuple[bytes, bytes]]


@dataclass
class Hostile:
    server: ThreadServer
    script: Script
    received: list[dict[str, Any]] = field(default_factory=list)
    #: The status of every answer with a body.
    status: int = 200
    #: The answer to a GET (the server's own stream) and to a notification or a response.
    server_stream: tuple[bytes, bytes] = (SSE, b"")
    acknowledgement: tuple[bytes, bytes] = (JSON_TYPE, b"")
    #: More headers on every answer.
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


#: `result_for`'s default: the id of the request it answers.
SAME_ID = object()


def result_for(request: dict[str, Any], answer_id: Any = SAME_ID,
               text: str = f"mail {EMAIL}", **extra: Any) -> dict[str, Any]:
    """A tool result answering `request` (with `answer_id` instead of its id, when given)."""
    return {"jsonrpc": "2.0", "id": request["id"] if answer_id is SAME_ID else answer_id,
            "result": {"content": [{"type": "text", "text": text}], "isError": False, **extra}}


def as_json(message: Any) -> tuple[bytes, bytes]:
    return JSON_TYPE, orjson.dumps(message)


def as_sse(*messages: Any) -> tuple[bytes, bytes]:
    return SSE, b"".join(b"event: message\ndata: " + orjson.dumps(m) + b"\n\n"
                         for m in messages)


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    holder: dict[str, Hostile] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        body = await read_body(receive)
        request = orjson.loads(body) if body else {}
        with holder["h"].lock:
            holder["h"].received.append(request)
        hostile = holder["h"]
        if scope["method"] == "GET":
            content_type, answer = hostile.server_stream
        elif "method" in request and "id" in request:
            content_type, answer = hostile.script(request)
        else:
            content_type, answer = hostile.acknowledgement
        await send({"type": "http.response.start", "status": hostile.status if answer else 202,
                    "headers": [(b"content-type", content_type), *hostile.headers]})
        await send({"type": "http.response.body", "body": answer})

    server = ThreadServer(lambda: app)
    holder["h"] = Hostile(server=server, script=lambda request: as_json(result_for(request)))
    with server:
        yield holder["h"]


@dataclass
class Gateway:
    running: RunningGateway
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}", "content-type": "application/json",
                "accept": "application/json, text/event-stream"}

    def post(self, message: Any = None, content: bytes | None = None) -> httpx2.Response:
        return httpx2.post(self.running.url + GOVERNED, timeout=15, headers=self.headers,
                           content=orjson.dumps(message) if content is None else content)

    def call(self, arguments: dict[str, Any] | None = None, request_id: Any = 7
             ) -> httpx2.Response:
        return self.post({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                          "params": {"name": "lookup", "arguments": arguments or {}}})

    def tool_events(self, count: int) -> list[dict[str, Any]]:
        """The tool call events, once there are `count` (a streamed call's event follows its
        last frame)."""
        deadline = time.monotonic() + 10
        while True:
            events = [e for e in self.running.app.extensions["gateway"].events.events
                      if e.get("mcp")]
            if len(events) >= count or time.monotonic() > deadline:
                return events
            time.sleep(0.02)


@pytest.fixture
def gateway(gateway_factory: GatewayFactory, hostile: Hostile, tmp_path: Path) -> Gateway:
    policies = tmp_path / "policies"
    shutil.copytree(REPO_POLICIES, policies)
    running = gateway_factory({
        "policies": {"directory": str(policies)},
        "quotas": {"projects": {"proj_h": {"budget": {"tool_calls": {"daily": 2}}}}},
        "mcp": {"servers": {"hostile": {"url": hostile.server.url + "/mcp"}}}},
        plan="control")
    db = open_database(running.db_path)
    try:
        ProjectStore(db).create(project_id="proj_h", account_id=running.account.id,
                                name="hostile", policy_id="mcp_tools")
    finally:
        db.conn.close()
    return Gateway(running, running.store.create_key(running.account.id,
                                                     project_id="proj_h")[1])


def messages_of(response: httpx2.Response) -> list[Any]:
    """The JSON-RPC messages of an answer, JSON or SSE (read as the SDK's client reads it)."""
    if not response.headers["content-type"].startswith("text/event-stream"):
        return [response.json()]
    found = []
    for frame in response.text.replace("\r\n", "\n").split("\n\n"):
        data = [line.removeprefix("data:").removeprefix(" ")
                for line in frame.split("\n") if line.startswith("data:")]
        if data and "".join(data):
            found.append(orjson.loads("\n".join(data)))
    return found


def test_the_client_id_never_goes_upstream_and_comes_back_exactly(
        gateway: Gateway, hostile: Hostile) -> None:
    response = gateway.call(request_id=BIG_ID)
    assert str(BIG_ID) in response.text  # exactly, not rounded by anyone
    (answer,) = messages_of(response)
    assert answer["id"] == BIG_ID
    assert answer["result"]["content"][0]["text"] == "mail [REDACTED:EMAIL]"
    (received,) = hostile.received
    assert isinstance(received["id"], str) and str(BIG_ID) not in orjson.dumps(received).decode()


@pytest.mark.parametrize("answer_id", [9007199254740992, BIG_ID, str(BIG_ID), None, 7],
                         ids=["rounded", "client", "client-as-string", "null", "other"])
@pytest.mark.parametrize("shape", ["json", "sse"])
def test_an_answer_with_another_id_is_never_relayed_and_the_call_counts(
        gateway: Gateway, hostile: Hostile, answer_id: Any, shape: str) -> None:
    """The server answers another id (the one a JS double makes of the client's, the
    client's own, anything): the result, unread by the output rules, never reaches the client;
    the call fails with the upstream error, yet it ran, so it counts against the budget."""
    encode = as_json if shape == "json" else as_sse
    hostile.script = lambda request: encode(result_for(request, answer_id=answer_id))
    for _ in range(2):
        response = gateway.call(request_id=BIG_ID)
        assert EMAIL not in response.text
        (error,) = messages_of(response)
        assert error["id"] == BIG_ID and error["error"]["code"] == -32002
    third = messages_of(gateway.call(request_id=BIG_ID))
    assert third[0]["error"]["code"] == -32003  # the budget of two is spent
    assert len(hostile.received) == 2
    events = gateway.tool_events(3)
    assert [e["outcome"] for e in events] == ["upstream_error", "upstream_error",
                                              "quota_exceeded"]


def test_a_stray_response_among_the_frames_ends_the_call(gateway: Gateway,
                                                          hostile: Hostile) -> None:
    """A response to something else, then the real answer: the stray one carries unread text,
    so the call ends there with the upstream error; the notification before it passes."""
    note = {"jsonrpc": "2.0", "method": "notifications/message",
            "params": {"level": "info", "data": "working"}}
    hostile.script = lambda request: as_sse(note, result_for(request, answer_id="other"),
                                            result_for(request, text="fine"))
    response = gateway.call()
    assert EMAIL not in response.text
    relayed = messages_of(response)
    assert relayed[0] == note
    assert relayed[1]["id"] == 7 and relayed[1]["error"]["code"] == -32002
    assert len(relayed) == 2


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085"])
def test_a_line_separator_in_a_result_does_not_bypass_redaction(
        gateway: Gateway, hostile: Hostile, separator: str) -> None:
    text = f"mail {EMAIL} {separator} end"
    hostile.script = lambda request: as_sse(result_for(request, text=text))
    response = gateway.call()
    assert EMAIL not in response.text
    (answer,) = messages_of(response)
    assert answer["result"]["content"][0]["text"] == f"mail [REDACTED:EMAIL] {separator} end"
    assert answer["result"]["_meta"]["policy"]["decision"] == "allow"
    assert gateway.tool_events(1)[0]["outcome"] == "completed"


@pytest.mark.parametrize("frames", [
    # Data that is no JSON (cut, or two messages' halves): never relayed as it came.
    b'event: message\ndata: {"jsonrpc":"2.0","id":"ID","result":{"content":'
    b'[{"type":"text","text":"mail ' + EMAIL.encode() + b'"}]}\n\n',
    b'data: {"jsonrpc":"2.0","id":"ID",\ndata: "result":{"content":[{"type":"text",'
    b'"text":"' + EMAIL.encode() + b'"}]}}}\n\n',
    # A batch, which MCP no longer has.
    b'data: [{"jsonrpc":"2.0","id":"ID","result":{"content":[{"type":"text","text":"'
    + EMAIL.encode() + b'"}]}}]\n\n',
    # The answer in a last frame without its blank line: the stream ends mid-frame.
    b'data: {"jsonrpc":"2.0","id":"ID","result":{"content":[{"type":"text","text":"'
    + EMAIL.encode() + b'"}]}}',
], ids=["cut", "split", "batch", "unfinished"])
def test_a_frame_the_gateway_cannot_read_is_never_relayed(gateway: Gateway, hostile: Hostile,
                                                          frames: bytes) -> None:
    hostile.script = lambda request: (SSE, frames.replace(b"ID", request["id"].encode()))
    response = gateway.call()
    assert response.status_code == 200
    assert EMAIL not in response.text
    (error,) = messages_of(response)
    assert error["id"] == 7 and error["error"]["code"] == -32002
    assert gateway.tool_events(1)[0]["outcome"] == "upstream_error"


def test_frames_without_data_and_server_requests_still_pass(gateway: Gateway,
                                                            hostile: Hostile) -> None:
    """A priming event (an id, empty data), a keep-alive comment and a request of the
    server's (an elicitation) reach the client; the answer after them is governed."""
    elicit = {"jsonrpc": "2.0", "id": 0, "method": "elicitation/create",
              "params": {"message": "Which one?", "requestedSchema": {"type": "object"}}}

    def script(request: dict[str, Any]) -> tuple[bytes, bytes]:
        _, frames = as_sse(elicit, result_for(request))
        return SSE, b"id: prime-1\ndata: \n\n: keep-alive\n\n" + frames

    hostile.script = script
    response = gateway.call()
    assert response.text.startswith("id: prime-1\n\n:\n\n")
    relayed = messages_of(response)
    assert relayed[0] == elicit
    assert relayed[1]["result"]["content"][0]["text"] == "mail [REDACTED:EMAIL]"


def nested(depth: int) -> str:
    """JSON text of a list nested `depth` levels deep (deeper than orjson writes)."""
    return "[" * depth + '"x"' + "]" * depth


@pytest.mark.parametrize("message", [
    '{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": DEEP300}}',
    '{"jsonrpc": "2.0", "id": 1, "method": "tools/call",'
    ' "params": {"name": "lookup", "arguments": {"x": DEEP300}}}',
    '{"jsonrpc": "2.0", "id": 1, "method": "tools/call",'
    ' "params": {"name": "lookup", "arguments": {"x": DEEP1000}}}',
], ids=["ping", "tools/call", "deepest"])
def test_a_deeply_nested_message_is_an_invalid_request(gateway: Gateway, hostile: Hostile,
                                                       message: str) -> None:
    text = message.replace("DEEP300", nested(300)).replace("DEEP1000", nested(1000))
    response = gateway.post(content=text.encode())
    # Not read as a message, so answered like any other invalid one: HTTP 400, no id.
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32600
    assert "nested more than 200 levels" in response.json()["error"]["message"]
    assert hostile.received == []


@pytest.mark.parametrize("shape", ["json", "sse"])
def test_a_deeply_nested_answer_is_an_upstream_error(gateway: Gateway, hostile: Hostile,
                                                     shape: str) -> None:
    def script(request: dict[str, Any]) -> tuple[bytes, bytes]:
        content_type, body = (as_json if shape == "json" else as_sse)(
            result_for(request, structuredContent={"x": "DEEP", "mail": EMAIL}))
        return content_type, body.replace(b'"DEEP"', nested(300).encode())

    hostile.script = script
    response = gateway.call()
    assert response.status_code == 200 and EMAIL not in response.text
    (error,) = messages_of(response)
    assert error["error"]["code"] == -32002
    assert gateway.tool_events(1)[0]["outcome"] == "upstream_error"


def test_an_email_in_a_key_of_the_structured_result_is_redacted(gateway: Gateway,
                                                                hostile: Hostile) -> None:
    structured = {"contacts": {EMAIL: {"name": "Jane"}, "john@example.com": {"name": "John"},
                               "[REDACTED:EMAIL]": {"name": "taken"}}}
    hostile.script = lambda request: as_sse(result_for(request, text="see structured",
                                                       structuredContent=structured))
    response = gateway.call()
    assert "example.com" not in response.text
    (answer,) = messages_of(response)
    contacts = answer["result"]["structuredContent"]["contacts"]
    assert contacts == {"[REDACTED:EMAIL]": {"name": "Jane"},
                        "[REDACTED:EMAIL] (2)": {"name": "John"},
                        "[REDACTED:EMAIL] (3)": {"name": "taken"}}  # none lost


def test_a_phone_number_in_an_argument_key_never_reaches_the_tool(gateway: Gateway,
                                                                  hostile: Hostile) -> None:
    response = gateway.call({"notes": {PHONE: "call back"}, "phone": PHONE})
    assert messages_of(response)[0]["result"]["_meta"]["policy"]["decision"] == "allow"
    (received,) = hostile.received
    assert received["params"]["arguments"] == {"notes": {"[REDACTED:PHONE]": "call back"},
                                               "phone": "[REDACTED:PHONE]"}
    assert "415" not in orjson.dumps(received).decode()


def test_an_email_in_a_key_of_a_server_error_is_redacted(gateway: Gateway,
                                                         hostile: Hostile) -> None:
    hostile.script = lambda request: as_json({
        "jsonrpc": "2.0", "id": request["id"],
        "error": {"code": -32000, "message": "lookup failed", "data": {EMAIL: "not found"}}})
    response = gateway.call()
    assert EMAIL not in response.text
    assert response.json()["error"]["data"]["[REDACTED:EMAIL]"] == "not found"


@pytest.mark.parametrize("shape", ["json", "sse"])
@pytest.mark.parametrize("answer_id", ["same", "other"])
def test_a_tool_list_under_another_id_never_shows_a_hidden_tool(
        gateway: Gateway, hostile: Hostile, shape: str, answer_id: str) -> None:
    encode = as_json if shape == "json" else as_sse
    tools = [{"name": name, "inputSchema": {"type": "object"}} for name in ("echo", "wipe_disk")]
    hostile.script = lambda request: encode({
        "jsonrpc": "2.0", "id": request["id"] if answer_id == "same" else 1,
        "result": {"tools": tools}})
    response = gateway.post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert "wipe_disk" not in response.text
    (answer,) = messages_of(response)
    assert answer["id"] == 1
    if answer_id == "same":
        assert [tool["name"] for tool in answer["result"]["tools"]] == ["echo"]
    else:
        assert answer["error"]["code"] == -32002


def test_a_relayed_request_cannot_carry_the_answer_to_another(gateway: Gateway,
                                                              hostile: Hostile) -> None:
    """The client's ids are small and guessable: a server answering a `ping` also sends a
    response under the id of the client's tool call in flight. It never reaches the client."""
    hostile.script = lambda request: as_sse(result_for(request, answer_id=8),
                                            {"jsonrpc": "2.0", "id": request["id"], "result": {}})
    response = gateway.post({"jsonrpc": "2.0", "id": 9, "method": "ping"})
    assert EMAIL not in response.text
    (error,) = messages_of(response)
    assert error["id"] == 9 and error["error"]["code"] == -32002
    hostile.script = lambda request: as_json({"jsonrpc": "2.0", "id": request["id"],
                                              "result": {}})
    assert gateway.post({"jsonrpc": "2.0", "id": 9, "method": "ping"}).json() == {
        "jsonrpc": "2.0", "id": 9, "result": {}}


def test_a_notification_gets_no_body_back(gateway: Gateway, hostile: Hostile) -> None:
    hostile.status = 200
    hostile.acknowledgement = as_json(result_for({"id": 8}))
    response = gateway.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert response.status_code == 202 and response.content == b""
    response = gateway.post({"jsonrpc": "2.0", "id": 0, "result": {"action": "decline"}})
    assert response.status_code == 202 and response.content == b""


def test_the_servers_stream_never_carries_a_response(gateway: Gateway,
                                                     hostile: Hostile) -> None:
    note = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
    hostile.server_stream = as_sse(note, result_for({"id": 8}), note)
    response = httpx2.get(gateway.running.url + GOVERNED, headers=gateway.headers, timeout=15)
    assert response.status_code == 200
    assert EMAIL not in response.text
    assert messages_of(response) == [note]  # the stream ends at the response


@pytest.mark.parametrize("status", [201, 203, 206])
def test_an_answer_under_another_success_status_is_governed(gateway: Gateway, hostile: Hostile,
                                                           status: int) -> None:
    """A client reads the body of any 2xx answer, so every one is governed."""
    hostile.status = status
    response = gateway.call()
    assert EMAIL not in response.text
    (answer,) = messages_of(response)
    assert answer["result"]["content"][0]["text"] == "mail [REDACTED:EMAIL]"


@pytest.mark.parametrize("method", ["ping", "tools/list", "tools/call"])
def test_a_stream_that_ends_without_the_answer_says_so(gateway: Gateway, hostile: Hostile,
                                                       method: str) -> None:
    note = {"jsonrpc": "2.0", "method": "notifications/message",
            "params": {"level": "info", "data": "working"}}
    hostile.script = lambda request: as_sse(note)
    response = gateway.post({"jsonrpc": "2.0", "id": 3, "method": method,
                             "params": {"name": "lookup", "arguments": {}}})
    relayed = messages_of(response)
    assert relayed[0] == note
    assert relayed[1]["id"] == 3 and relayed[1]["error"]["code"] == -32002


@pytest.mark.parametrize("answer", [as_json, as_sse])
def test_header_bytes_that_are_not_latin1_text_are_relayed_as_they_came(
        gateway: Gateway, hostile: Hostile, answer: Callable[..., tuple[bytes, bytes]]) -> None:
    # UTF-8 in a session id: read as text, it could not go out in a response head (a 500).
    session = "s\u00e9ssion-\u20ac".encode()
    hostile.headers = [(b"mcp-session-id", session)]
    hostile.script = lambda request: answer(result_for(request))
    response = gateway.call()
    assert response.status_code == 200
    assert response.headers.raw.count((b"mcp-session-id", session)) == 1
    (message,) = messages_of(response)
    assert message["result"]["content"][0]["text"] == "mail [REDACTED:EMAIL]"
