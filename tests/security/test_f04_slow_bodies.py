"""No timeout on reading a body: a POST trickling 1 byte every 5 s stayed open for
110 s and more, 1,500 of them at once, with no authentication. Now the whole body has a
deadline (408 in the API's shape), and a worker serves a bounded number of requests at once
(503 server_busy beyond, before any body is read)."""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

import httpx2
import pytest


class Trickler(threading.Thread):
    """A client that sends a request head, then its body one byte every `interval` seconds."""

    def __init__(self, url: str, path: str, *, length: int = 200, interval: float = 0.25):
        super().__init__(daemon=True)
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        self.sock.sendall(f"POST {path} HTTP/1.1\r\nhost: {parts.netloc}\r\n"
                          f"content-type: application/json\r\ncontent-length: {length}\r\n"
                          "\r\n".encode())
        self.length, self.interval = length, interval
        self.answer = b""
        self.answered_after: float | None = None
        self.started = time.monotonic()

    def run(self) -> None:
        self.sock.settimeout(self.interval)
        try:
            for _ in range(self.length):
                try:
                    self.sock.sendall(b" ")
                except OSError:
                    break
                try:
                    chunk = self.sock.recv(65536)
                except TimeoutError:
                    continue
                if chunk:
                    self.answered_after = time.monotonic() - self.started
                    self.answer = chunk + self._rest_of_answer(chunk)
                break
        finally:
            self.sock.close()

    def _rest_of_answer(self, first: bytes) -> bytes:
        self.sock.settimeout(5)
        rest = b""
        head, _, body = first.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) + len(rest) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return rest


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/policy/v1/messages",
                                  "/api/policy-gateway/projects"])
def test_a_trickling_body_gets_408_at_its_deadline(make_secure, path):
    secure = make_secure(timeouts={"request_body": 1.0})
    trickler = Trickler(secure.url, path)
    trickler.start()
    trickler.join(20)
    # At its 1 s deadline, long before the 50 s the body would take (a loaded machine answers
    # late, never that late).
    assert trickler.answered_after is not None and trickler.answered_after < 10.0
    head, _, body = trickler.answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), trickler.answer[:300]
    assert b'"code":"request_timeout"' in body


def test_beyond_the_request_cap_a_worker_refuses_at_once_and_recovers(make_secure):
    # The tricklers hold their slots for 4 s: a request waiting for a slot would take seconds,
    # one refused at once takes well under 1.5 s even on a loaded machine.
    secure = make_secure(limits={"max_concurrent_requests": 3}, timeouts={"request_body": 4.0})
    tricklers = [Trickler(secure.url, "/v1/chat/completions") for _ in range(3)]
    for trickler in tricklers:
        trickler.start()
    routes = secure.gateway.app.asgi_app  # counts the requests it serves
    deadline = time.monotonic() + 10
    while routes.active < 3:  # all three are being read (a loaded machine takes its time)
        assert time.monotonic() < deadline, routes.active
        time.sleep(0.02)
    started = time.monotonic()
    busy = httpx2.post(secure.url + "/v1/chat/completions", timeout=10,
                      headers={"authorization": f"Bearer {secure.keys['a']}"}, json={})
    assert time.monotonic() - started < 1.5
    assert busy.status_code == 503
    assert busy.json()["error"]["code"] == "server_busy"
    assert busy.headers["retry-after"] == "1"
    assert httpx2.get(secure.url + "/healthz", timeout=5).status_code == 200  # probes pass
    for trickler in tricklers:
        trickler.join(10)
        assert trickler.answer.startswith(b"HTTP/1.1 408")
    assert secure.chat("hello").status_code == 200  # the slots came back
