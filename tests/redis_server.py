"""A real `redis-server` for tests: on a free port of 127.0.0.1, in a temporary directory.

`RedisServer(dir).start()` waits until it answers PING; `stop()` kills it (SIGKILL: a crash, as
far as the gateway can tell) and `start()` again brings it back on the same port. Without the
binary the tests that need it are skipped with the reason, except under CI (`CI` set), where
they must run: `.ci/run` and `./dev` install it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO, Any

import pytest
from free_ports import free_port

BINARY = "redis-server"


def require_redis_server() -> str:
    path = shutil.which(BINARY)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed; CI must install it (see .ci/run)")
        pytest.skip("redis-server is not installed (apt-get install redis-server, or ./dev "
                    "setup installs it)")
    return path


class RedisServer:
    def __init__(self, directory: Path, port: int | None = None, *,
                 appendonly: bool = False, fsync: str = "always") -> None:
        self.binary = require_redis_server()
        self.directory = directory
        self.port = port or free_port()
        #: Persist every write to the append-only file before answering (survives SIGKILL).
        self.appendonly = appendonly
        #: `always` (tests: a SIGKILL loses nothing) or `everysec` (production's usual).
        self.fsync = fsync
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", self.fsync,
             "--dir", str(self.directory), "--maxmemory-policy", "noeviction",
             "--protected-mode", "yes", *self.arguments()],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: "
                                   f"{(self.directory / 'redis.log').read_text()[-2000:]}")
            if self.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not answer PING within 10 s")

    def arguments(self) -> list[str]:
        """More redis-server arguments (a subclass's)."""
        return []

    def ping(self) -> bool:
        try:
            return self.command("PING") == "PONG"
        except (OSError, RuntimeError):  # refused, or LOADING the append-only file
            return False

    def command(self, *words: str) -> Any:
        """One command over RESP2, its reply parsed: str, int, None or a list of them."""
        payload = f"*{len(words)}\r\n" + "".join(
            f"${len(w.encode())}\r\n{w}\r\n" for w in words)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(payload.encode())
            with sock.makefile("rb") as stream:
                return _read_reply(stream)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


def _read_reply(stream: IO[bytes]) -> Any:
    line = stream.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:].decode()
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RuntimeError(rest)
    if kind == b":":
        return int(rest)
    if kind == b"$":
        if int(rest) < 0:
            return None
        data = stream.read(int(rest) + 2)[:-2]
        return data.decode()
    if kind == b"*":
        return None if int(rest) < 0 else [_read_reply(stream) for _ in range(int(rest))]
    raise RuntimeError(f"unexpected reply {line!r}")
