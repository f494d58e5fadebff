"""ruff and mypy stay clean: CI runs them through the test suite, so a lint regression fails it."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_ruff_is_clean():
    result = run("ruff", "check", "gateway", "dsl", "bench", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean():
    result = run("mypy", "gateway", "dsl")
    assert result.returncode == 0, result.stdout + result.stderr
