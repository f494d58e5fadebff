"""The `python -m dsl` command lines at the top of docs/policy-language.md, run as written in a
copy of the example policies, with a request-facts file put beside the policies as well."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_documented_commands_run(tmp_path: Path):
    page = (ROOT / "docs" / "policy-language.md").read_text()
    block = re.search(r"```sh\n(.*?)\n```", page, re.S).group(1)
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    # The facts file beside the policies, where the eval example invites people to put it.
    (tmp_path / "policies" / "req.json").write_text('{"text": "hello"}\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + block], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "skipped" in done.stderr and "req.json" in done.stderr
    assert re.search(r"\brefuse\b", done.stdout), done.stdout  # the eval of "you idiot"
