"""The README's quick start, as a user runs it: `python -m gateway serve` on the built-in
defaults (no configuration file, no provider key: the echo upstream answers), an account and a
key made with the documented commands, and the official SDKs with only base URL and key set."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest
from free_ports import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    workdir = tmp_path_factory.mktemp("quickstart")
    shutil.copytree(ROOT / "policies", workdir / "policies")
    # Like a fresh shell: no provider keys, so the built-in echo answers.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "ANTHROPIC_", "GATEWAY_"))}

    def cli(*args: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "gateway", *args, "--json"], cwd=workdir,
                             env=env, check=True, capture_output=True, text=True,
                             timeout=60).stdout
        return json.loads(out)

    account = cli("accounts", "create", "demo", "--plan", "control")
    key = cli("keys", "create", "--account", account["id"], "--label", "laptop")["key"]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--port", str(port)],
                              cwd=workdir, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"gateway did not start: {server.stderr.read()!r}")
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}", key
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        assert server.stderr is not None
        server.stderr.close()
    assert (workdir / "data" / "gateway.db").exists()  # the embedded default database


def test_openai_sdk_as_in_the_readme(quickstart):
    url, key = quickstart
    with openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as client:
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}])
        assert reply.choices[0].message.content == "echo: Hello"
        with client.responses.create(model="gpt-4o-mini", input="Hello", stream=True) as stream:
            events = [e.type for e in stream]
    assert events[0] == "response.created" and events[-1] == "response.completed"


def test_anthropic_sdk_as_in_the_readme(quickstart):
    url, key = quickstart
    with anthropic.Anthropic(base_url=url, api_key=key, max_retries=0) as claude, \
            claude.messages.stream(model="claude-sonnet-5-5", max_tokens=256,
                                   messages=[{"role": "user", "content": "Hello"}]) as stream:
        assert stream.get_final_message().content[0].text == "echo: Hello"


def test_a_wrong_key_is_refused(quickstart):
    url, _ = quickstart
    with openai.OpenAI(base_url=url + "/v1", api_key="ak_not-a-key", max_retries=0) as client, \
            pytest.raises(openai.AuthenticationError):
        client.models.list()
