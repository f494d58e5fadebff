"""`serve` raises the soft open file limit to the hard limit at start, logged once."""

from __future__ import annotations

import logging
import resource
import subprocess
import sys
from typing import Any

import pytest

from gateway import serve


class FakeLimits:
    """Stands in for the `resource` module: records what the gateway asked for."""

    RLIMIT_NOFILE = resource.RLIMIT_NOFILE
    RLIM_INFINITY = resource.RLIM_INFINITY

    def __init__(self, soft: int, hard: int, refuse: bool = False) -> None:
        self.limits = (soft, hard)
        self.refuse = refuse
        self.calls: list[tuple[int, int]] = []

    def getrlimit(self, _which: int) -> tuple[int, int]:
        return self.limits

    def setrlimit(self, _which: int, limits: tuple[int, int]) -> None:
        self.calls.append(limits)
        if self.refuse:
            raise ValueError("not allowed")
        self.limits = limits


def use(monkeypatch: pytest.MonkeyPatch, fake: FakeLimits) -> None:
    monkeypatch.setattr(serve, "resource", fake)


def messages(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "gateway.serve"]


def test_soft_limit_is_raised_to_the_hard_limit_and_logged_once(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeLimits(1024, 65536)
    use(monkeypatch, fake)
    with caplog.at_level(logging.INFO, logger="gateway.serve"):
        assert serve.raise_open_file_limit() == 65536
    assert fake.calls == [(65536, 65536)]
    assert messages(caplog) == [(logging.INFO, "open file limit raised from 1024 to 65536")]


def test_nothing_is_changed_or_logged_when_already_at_the_hard_limit(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeLimits(20000, 20000)
    use(monkeypatch, fake)
    with caplog.at_level(logging.INFO, logger="gateway.serve"):
        assert serve.raise_open_file_limit() == 20000
    assert fake.calls == []
    assert messages(caplog) == []


def test_unlimited_hard_limit_uses_the_kernel_ceiling(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    ceiling = tmp_path / "nr_open"
    ceiling.write_text("1048576\n")
    monkeypatch.setattr(serve, "NR_OPEN_PATH", str(ceiling))
    fake = FakeLimits(1024, resource.RLIM_INFINITY)
    use(monkeypatch, fake)
    assert serve.raise_open_file_limit() == 1048576
    assert fake.calls == [(1048576, resource.RLIM_INFINITY)]


def test_a_refused_raise_and_a_low_hard_limit_are_warnings_not_failures(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    use(monkeypatch, FakeLimits(256, 4096, refuse=True))
    with caplog.at_level(logging.INFO, logger="gateway.serve"):
        assert serve.raise_open_file_limit() == 256
    levels = [level for level, _ in messages(caplog)]
    assert levels == [logging.WARNING, logging.WARNING]
    assert "could not raise the open file limit from 256 to 4096" in messages(caplog)[0][1]
    assert "at most about 128 streams" in messages(caplog)[1][1]


def test_a_real_process_gets_its_soft_limit_raised() -> None:
    """The real system call, in a child whose soft limit starts low."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 512:
        pytest.skip("the hard open file limit here is too low to lower the soft one under it")

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    code = ("import resource; from gateway.serve import raise_open_file_limit; "
            "print(raise_open_file_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    out = subprocess.run([sys.executable, "-c", code], preexec_fn=lower, check=True,
                         capture_output=True, text=True, timeout=60).stdout.split()
    returned, now = int(out[0]), int(out[1])
    assert returned == now > 256
    if hard != resource.RLIM_INFINITY:
        assert now == hard
