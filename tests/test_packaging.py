"""The wheel works without the repository: built, installed (not editable) into a fresh
virtualenv, it checks the example policies and serves a `/v1` request.

The fresh environment takes the project's dependencies from the test environment's
site-packages through a path entry (no download), but not its editable install: `gateway` and
`dsl` can only come from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
import venv
from pathlib import Path

import httpx2
import pytest
from free_ports import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_for_the_wheel():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"])
    on_disk = {str(p.parent.relative_to(ROOT)).replace(os.sep, ".")
               for top in ("gateway", "dsl") for p in (ROOT / top).rglob("__init__.py")}
    assert on_disk - listed == set(), "add these packages to [tool.setuptools] packages"
    assert "dsl.grammar" in listed


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the built wheel installed; returns its python."""
    root = tmp_path_factory.mktemp("wheel")
    # Built from a copy of what the wheel is made of: setuptools writes build/ and *.egg-info
    # beside the sources, and the repository must stay as it is.
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("gateway", "dsl", "grammar"):
        shutil.copytree(ROOT / name, source / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(root / "dist"), str(source)], capture_output=True, text=True,
                           timeout=600, cwd=root)
    assert build.returncode == 0, build.stderr
    (wheel,) = (root / "dist").glob("policy_gateway-*.whl")
    venv.create(root / "venv", with_pip=False)
    python = root / "venv" / "bin" / "python"
    fresh_site = subprocess.run([str(python), "-c", "import sysconfig; print("
                                 "sysconfig.get_paths()['purelib'])"], capture_output=True,
                                text=True, check=True).stdout.strip()
    (Path(fresh_site) / "test-dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                              "--target", fresh_site, str(wheel)], capture_output=True,
                             text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    return python


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GATEWAY_CONFIG")}


def test_the_installed_wheel_checks_policies(installed: Path, tmp_path: Path):
    where = subprocess.run([str(installed), "-c", "import dsl, gateway; print(dsl.__file__, "
                            "gateway.__file__)"], capture_output=True, text=True, cwd=tmp_path,
                           env=_clean_env(), check=True).stdout
    assert str(ROOT) not in where and str(installed.parents[1]) in where
    check = subprocess.run([str(installed), "-m", "dsl", "check", str(ROOT / "policies")],
                           capture_output=True, text=True, cwd=tmp_path, env=_clean_env(),
                           timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "0 errors" in check.stdout


@pytest.mark.slow
def test_the_installed_wheel_serves_a_v1_request(installed: Path, tmp_path: Path):
    port = free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(f'[database]\npath = "{tmp_path / "gateway.db"}"\n'
                      f'[policies]\ndirectory = "{ROOT / "policies"}"\n')
    env = {**_clean_env(), "OPENAI_API_KEY": "", "ANTHROPIC_API_KEY": ""}
    made = subprocess.run([str(installed), "-m", "gateway", "accounts", "create", "wheel",
                           "--plan", "free", "--config", str(config), "--json"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert made.returncode == 0, made.stderr
    account = json.loads(made.stdout)["id"]
    key = subprocess.run([str(installed), "-m", "gateway", "keys", "create", "--account",
                          account, "--config", str(config), "-q"], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=60, check=True).stdout.strip()
    server = subprocess.Popen([str(installed), "-m", "gateway", "serve", "--config", str(config),
                               "--port", str(port)], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = httpx2.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={
                    "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]},
                    headers={"authorization": f"Bearer {key}"}, timeout=10)
                break
            except httpx2.ConnectError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "the installed gateway did not start"
                time.sleep(0.2)
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"] == "echo: Hi"
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stderr is not None:
            server.stderr.close()
