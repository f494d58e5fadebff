"""Both surfaces in-process, the upstream an injected `httpx2.MockTransport`: the exact ASGI
message sequence of answers and streams, error endings included, and the one event each
governed request records. Time-based endings run on trio's MockClock, not on real sleeps."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
import trio
import trio.testing
from inprocess.asgi import Client, body_bytes, call, header, serving, shape

from gateway import Config, create_app
from gateway.db import open_database
from gateway.identity.keys import IdentityStore
from gateway.identity.projects import ProjectStore

OUTPUT_GUARD = Path(__file__).parents[1] / "policy_e2e" / "policies" / "output_guard.pol"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}
STREAM = {**CHAT, "stream": True}


def chunk(text: str) -> bytes:
    payload = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + orjson.dumps(payload) + b"\n\n"


DONE = b"data: [DONE]\n\n"


class Frames(httpx2.AsyncByteStream):
    """An upstream body sent in pieces; `then` runs after the last (raise, or hang)."""

    def __init__(self, pieces: list[bytes], then: Callable[[], Any] | None = None) -> None:
        self.pieces = pieces
        self.then = then
        self._generator: Any = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        self._generator = self._pieces()
        return self._generator

    async def _pieces(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece
        if self.then is not None:
            await self.then()

    async def aclose(self) -> None:  # as a real connection does when the gateway closes it
        if self._generator is not None:
            await self._generator.aclose()


def sse(pieces: list[bytes], then: Callable[[], Any] | None = None) -> httpx2.Response:
    return httpx2.Response(200, headers={"content-type": "text/event-stream"},
                          stream=Frames(pieces, then))


async def reset() -> None:
    raise httpx2.ReadError("connection reset by peer")


class Gateway:
    def __init__(self, app: Any, key: str, state: Any) -> None:
        self.app, self.key, self.state = app, key, state

    async def post(self, path: str, json: Any, client: Client | None = None) -> list[Any]:
        return await call(self.app, "POST", path, json=json, client=client,
                          headers={"authorization": f"Bearer {self.key}"})

    def enforcement_events(self) -> list[dict[str, Any]]:
        return [e for e in self.state.events.events if e["event_type"] == "enforcement"]


@pytest.fixture
def make_gateway(tmp_path: Path) -> Callable[[Callable[[httpx2.Request], Any]], Any]:
    policies = tmp_path / "policies"
    policies.mkdir()
    shutil.copy(OUTPUT_GUARD, policies / OUTPUT_GUARD.name)
    db_path = tmp_path / "gateway.db"
    db = open_database(db_path)
    store = IdentityStore(db)
    account = store.create_account("acme", "control")
    ProjectStore(db).create(project_id="proj", account_id=account.id, name="Proj",
                            policy_id="output_guard")
    _, key = store.create_key(account.id, project_id="proj")
    db.conn.close()

    def make(handler: Callable[[httpx2.Request], Any], **sections: Any) -> Gateway:
        config = Config.from_mapping({
            "database": {"path": str(db_path)}, "policies": {"directory": str(policies)},
            "providers": {"openai": {"kind": "openai", "base_url": "http://upstream.test/v1",
                                     "api_key": "sk-test"}},
            "timeouts": {"idle": 30, "total": 60}, **sections,
        }, env={})
        app = create_app(config, transport=httpx2.MockTransport(handler))
        return Gateway(app, key, app.extensions["gateway"])

    return make


async def test_v1_stream_is_relayed_frame_by_frame_untouched(make_gateway):
    frames = [chunk("Hel"), chunk("lo"), DONE]
    gw = make_gateway(lambda request: sse(frames))
    async with serving(gw.app):
        sent = await gw.post("/v1/chat/completions", STREAM)
    assert shape(sent) == [("start", 200), ("body", True), ("body", True), ("body", True),
                           ("body", False)]
    assert [m["body"] for m in sent[1:4]] == frames
    assert header(sent, "content-type") == "text/event-stream"


async def test_v1_stream_reset_mid_way_ends_with_the_apis_error_frame(make_gateway):
    gw = make_gateway(lambda request: sse([chunk("Hel")], then=reset))
    async with serving(gw.app):
        sent = await gw.post("/v1/chat/completions", STREAM)
    assert shape(sent) == [("start", 200), ("body", True), ("body", True), ("body", False)]
    error = orjson.loads(sent[2]["body"].removeprefix(b"data: ").strip())
    assert error["error"]["code"] == "upstream_unavailable"
    assert "policy" not in error


async def test_v1_upstream_unreachable_before_the_first_byte_is_a_502(make_gateway):
    def unreachable(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused")

    gw = make_gateway(unreachable)
    async with serving(gw.app):
        sent = await gw.post("/v1/chat/completions", STREAM)
    assert shape(sent) == [("start", 502), ("body", False)]
    assert orjson.loads(body_bytes(sent))["error"]["code"] == "upstream_unavailable"


async def test_policy_stream_carries_the_policy_object_and_records_one_event(make_gateway):
    gw = make_gateway(lambda request: sse([chunk("Hel"), chunk("lo"), DONE]))
    async with serving(gw.app):
        sent = await gw.post("/policy/chat/completions", STREAM)
        events = gw.enforcement_events()
    kinds = shape(sent)
    assert kinds[0] == ("start", 200) and kinds[-1] == ("body", False)
    frames = [f for f in body_bytes(sent).split(b"\n\n") if f.startswith(b"data: {")]
    assert frames and all(orjson.loads(f[6:])["policy"]["policy_id"] == "output_guard"
                          for f in frames)
    assert body_bytes(sent).endswith(DONE)
    assert [(e["outcome"], e["status"]) for e in events] == [("completed", 200)]


async def test_policy_output_rule_stops_the_stream_before_the_violating_text(make_gateway):
    gw = make_gateway(lambda request: sse(
        [chunk("Our codename is project "), chunk("nightjar, sorry."), DONE]))
    async with serving(gw.app):
        sent = await gw.post("/policy/chat/completions", STREAM)
        events = gw.enforcement_events()
    frames = [orjson.loads(f[6:]) for f in body_bytes(sent).split(b"\n\n")
              if f.startswith(b"data: {")]
    *chunks, refusal = frames
    text = "".join(f["choices"][0]["delta"].get("content", "") for f in chunks)
    assert "nightjar" not in text
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert (refusal["error"]["code"], refusal["error"]["type"]) == (
        "policy_refused", "permission_error")
    assert chunks[-1]["policy"]["decision"] == refusal["policy"]["decision"] == "refuse"
    assert body_bytes(sent).endswith(DONE)
    assert shape(sent)[-1] == ("body", False)
    assert [(e["outcome"], e["decision"]) for e in events] == [("refused", "refuse")]


async def test_policy_stream_reset_ends_with_an_error_frame_and_one_event(make_gateway):
    gw = make_gateway(lambda request: sse([chunk("Hello there. ")], then=reset))
    async with serving(gw.app):
        sent = await gw.post("/policy/chat/completions", STREAM)
        events = gw.enforcement_events()
    last_frame = [f for f in body_bytes(sent).split(b"\n\n") if f][-1]
    error = orjson.loads(last_frame.removeprefix(b"data: "))
    assert error["error"]["code"] == "upstream_unavailable"
    assert error["policy"]["policy_id"] == "output_guard"
    assert [(e["outcome"], e["status"]) for e in events] == [("upstream_error", 502)]


async def test_policy_upstream_unreachable_is_a_502_with_policy_and_one_event(make_gateway):
    def unreachable(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused")

    gw = make_gateway(unreachable)
    async with serving(gw.app):
        sent = await gw.post("/policy/chat/completions", CHAT)
        events = gw.enforcement_events()
    assert shape(sent) == [("start", 502), ("body", False)]
    answer = orjson.loads(body_bytes(sent))
    assert answer["error"]["code"] == "upstream_unavailable"
    assert answer["policy"]["policy_id"] == "output_guard"
    assert [(e["outcome"], e["status"]) for e in events] == [("upstream_error", 502)]


async def test_policy_idle_upstream_times_out_on_the_mock_clock(make_gateway, mock_clock):
    # The clock moves only when the test says so: the gateway's own threads (database writes)
    # run in real time, and nothing but the test advances trio's time.
    gw = make_gateway(lambda request: sse([chunk("Hel")], then=trio.sleep_forever))
    client = Client(orjson.dumps(STREAM))
    async with serving(gw.app):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gw.post, "/policy/chat/completions", STREAM, client)
            await client.wait_for(2)  # the head and the first frame
            mock_clock.jump(29.9)
            await trio.testing.wait_all_tasks_blocked()
            assert shape(client.sent)[-1] == ("body", True)  # 29.9 s of silence: still open
            mock_clock.jump(0.2)  # past the configured idle timeout of 30 s
        events = gw.enforcement_events()
    assert b"upstream_timeout" in body_bytes(client.sent)
    assert shape(client.sent)[-1] == ("body", False)
    assert [(e["outcome"], e["status"]) for e in events] == [("upstream_error", 504)]


async def test_policy_client_gone_mid_stream_closes_upstream_and_records_once(make_gateway):
    upstream_closed = trio.Event()

    async def hang() -> None:
        try:
            await trio.sleep_forever()
        finally:
            upstream_closed.set()

    gw = make_gateway(lambda request: sse([chunk("Hello there. ")], then=hang))
    client = Client(orjson.dumps(STREAM))
    async with serving(gw.app):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gw.post, "/policy/chat/completions", STREAM, client)
            await client.wait_for(2)  # the head and the first frame
            client.gone.set()
        with trio.fail_after(5):
            await upstream_closed.wait()
        events = gw.enforcement_events()
    assert shape(client.sent)[:2] == [("start", 200), ("body", True)]
    assert [(e["outcome"], e["status"]) for e in events] == [("client_disconnected", 499)]


async def test_policy_batches_path_answers_in_the_anthropic_shape(make_gateway):
    gw = make_gateway(lambda request: httpx2.Response(500))
    async with serving(gw.app):
        for path in ("/policy/v1/messages/batches", "/policy/messages/batches",
                     "/v1/messages/batches"):
            sent = await call(gw.app, "GET", path)
            answer = orjson.loads(body_bytes(sent))
            assert sent[0]["status"] == 404, path
            assert answer["type"] == "error" and answer["error"]["type"] == "not_found_error", \
                path


async def test_a_quota_file_locked_too_long_by_another_process_is_a_503_and_one_event(
        make_gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    # Another worker (here a plain connection) holds the quota file's write lock: admission
    # waits on the loop, then refuses in the API's shape instead of failing the request.
    import sqlite3

    from gateway.quota import sqlite as quota_sqlite

    monkeypatch.setattr(quota_sqlite, "LOCK_WAIT_SECONDS", 0.2)
    answer = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
              "choices": [{"index": 0, "finish_reason": "stop",
                           "message": {"role": "assistant", "content": "Hi"}}],
              "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    upstream_calls = []

    def upstream(request: httpx2.Request) -> httpx2.Response:
        upstream_calls.append(request)
        return httpx2.Response(200, json=answer)

    gw = make_gateway(upstream, quotas={"budget": {"requests": {"daily": 100}}})
    async with serving(gw.app):
        assert shape(await gw.post("/policy/chat/completions", CHAT))[0] == ("start", 200)
        other = sqlite3.connect(gw.state.quotas.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with trio.fail_after(10):
                sent = await gw.post("/policy/chat/completions", CHAT)
        finally:
            other.execute("ROLLBACK")
            other.close()
        events = gw.enforcement_events()
    assert shape(sent) == [("start", 503), ("body", False)]
    assert header(sent, "retry-after") == "1"
    body = orjson.loads(body_bytes(sent))
    assert body["error"]["code"] == "quota_unavailable"
    assert body["policy"]["reason_code"] == "QUOTA_UNAVAILABLE"
    assert len(upstream_calls) == 1  # the refused request never reached the upstream
    assert [(e["outcome"], e["status"]) for e in events] == [
        ("completed", 200), ("quota_unavailable", 503)]


@pytest.mark.parametrize("path,body", [("/v1/chat/completions", STREAM),
                                       ("/policy/chat/completions", STREAM),
                                       ("/v1/chat/completions", CHAT)])
async def test_an_upstream_header_that_is_not_latin1_text_is_relayed_byte_for_byte(
        make_gateway, path: str, body: dict[str, Any]) -> None:
    # UTF-8 bytes in a header value: httpx2 reads them as text that a response head cannot
    # carry. They go out as they came, and the upstream exchange is closed and forgotten.
    note = "caf\u00e9 \u20ac".encode()
    answer = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
              "choices": [{"index": 0, "finish_reason": "stop",
                           "message": {"role": "assistant", "content": "Hi"}}]}

    def upstream(request: httpx2.Request) -> httpx2.Response:
        if orjson.loads(request.content).get("stream"):
            return httpx2.Response(200, headers=[(b"content-type", b"text/event-stream"),
                                                 (b"x-upstream-note", note)],
                                   stream=Frames([chunk("hi"), DONE]))
        return httpx2.Response(200, headers=[(b"x-upstream-note", note)], json=answer)

    gw = make_gateway(upstream)
    async with serving(gw.app):
        sent = await gw.post(path, body)
        left = set(gw.app.extensions["draining"].exchanges)
    assert shape(sent)[0] == ("start", 200) and shape(sent)[-1] == ("body", False)
    assert (b"x-upstream-note", note) in sent[0]["headers"]
    assert not left


async def test_a_byte_order_mark_cannot_hide_the_first_frame_from_output_rules(make_gateway):
    # A client drops one leading byte order mark and reads the frame after it: so must the
    # gateway, or the frame would pass as one without data, unread.
    gw = make_gateway(lambda request: sse(
        [b"\xef\xbb\xbf" + chunk("Our codename is project nightjar"), DONE]))
    async with serving(gw.app):
        sent = await gw.post("/policy/chat/completions", STREAM)
        events = gw.enforcement_events()
    frames = [orjson.loads(f[6:]) for f in body_bytes(sent).split(b"\n\n")
              if f.startswith(b"data: {")]
    text = "".join(f["choices"][0]["delta"].get("content", "") for f in frames[:-1])
    assert "nightjar" not in text and b"\xef\xbb\xbf" not in body_bytes(sent)
    assert frames[-1]["error"]["code"] == "policy_refused"
    assert [(e["outcome"], e["decision"]) for e in events] == [("refused", "refuse")]


async def test_frames_without_a_payload_go_out_in_their_plain_form(make_gateway):
    # A comment's text (here past a line separator that some clients end lines at) and the
    # fields of frames without data are never relayed: the gateway did not read them.
    hidden = ': keep-alive\u2028data: {"choices":[{"delta":{"content":"nightjar"}}]}\n\n'
    gw = make_gateway(lambda request: sse(
        [hidden.encode(), chunk("Hel"), b"event: ping\nid: 3\n\n", chunk("lo"),
         b"id: 9\ndata: [DONE]\n\n"]))
    async with serving(gw.app):
        sent = await gw.post("/policy/chat/completions", STREAM)
    out = body_bytes(sent)
    assert b"nightjar" not in out and b"ping" not in out and b"id:" not in out
    assert out.startswith(b":\n\n") and out.endswith(b"\n\ndata: [DONE]\n\n")
    texts = [orjson.loads(f[6:])["choices"][0]["delta"]["content"]
             for f in out.split(b"\n\n") if f.startswith(b"data: {")]
    assert "".join(texts) == "Hello"
