"""The set-up block of docs/governed-surface.md, run as written (with `python -m gateway` for
`./dev gateway`, which would install a virtualenv first) in a fresh directory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_governed_surface_set_up_runs(tmp_path: Path):
    page = (ROOT / "docs" / "governed-surface.md").read_text()
    block = re.search(r"## Set up a governed project\n\n```sh\n(.*?)\n```", page, re.S).group(1)
    script = block.replace("./dev gateway", "python -m gateway")
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(PYTHONPATH=str(ROOT),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    done = subprocess.run(["bash", "-c", f"set -euo pipefail\n{script}\necho \"$KEY\""],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith("ak_")
    assert (tmp_path / "data" / "policies" / "support_bot.pol").is_file()
