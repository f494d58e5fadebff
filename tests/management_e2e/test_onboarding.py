"""docs/onboarding.md, run as a user runs it: its command blocks, exactly as written, in one
shell session in a copy of the repository's `policies/`, with the gateway block started in the
background, and its Python block with the official OpenAI SDK. The printed result must be the one
the page shows.

Two things differ from a user's terminal, both outside the page's commands: the gateway listens
on a free port instead of 8080 (tests run side by side), and `python` is this virtualenv's.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from free_ports import free_port

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "onboarding.md"
BLOCK = re.compile(r"(?:<!-- onboarding-test: (?P<mark>\w+)[^>]*-->\n)?"
                   r"```(?P<lang>\w+)\n(?P<body>.*?)\n```", re.S)


def _blocks() -> list[tuple[str | None, str, str]]:
    return [(m["mark"], m["lang"], m["body"]) for m in BLOCK.finditer(PAGE.read_text())]


def _wait_for_port(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert server.poll() is None, "the gateway exited"
        assert time.monotonic() < deadline, "the gateway did not start"
        time.sleep(0.1)


def test_the_page_has_the_steps_the_issue_asks_for():
    blocks = _blocks()
    marks = [mark for mark, _, _ in blocks]
    assert marks.count("background") == 1 and marks.count("skip") == 1
    shell = "\n".join(body for mark, lang, body in blocks if lang == "sh" and mark is None)
    for command in ("policies add", "projects create", "projects link", "keys create"):
        assert f"python -m gateway {command}" in shell
    [python] = [body for _, lang, body in blocks if lang == "python"]
    assert '/policy/v1"' in python and "stream=True" in python


def _copy_of_the_repository(target: Path) -> None:
    """The repository as a user's clone has it: the files git knows (this tree's versions,
    changes included), committed, so that `git status` shows what the walk-through changed."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    git = ["git", "-c", "user.name=onboarding", "-c", "user.email=onboarding@example.com"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "clone"]):
        subprocess.run([*git, *command], cwd=target, check=True, capture_output=True)


def test_the_walk_through_runs_end_to_end_and_changes_no_tracked_file(tmp_path):
    workdir = tmp_path / "clone"
    workdir.mkdir()
    _copy_of_the_repository(workdir)
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "ANTHROPIC_", "GATEWAY_", "PYTHONPATH"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(workdir)  # the copy's code, not this tree's

    blocks = _blocks()
    [serve] = [body for mark, _, body in blocks if mark == "background"]
    [expected] = [body for _, lang, body in blocks if lang == "text"]
    script = ["set -euo pipefail"]
    for index, (mark, lang, body) in enumerate(blocks):
        if mark is not None or lang == "text":
            continue
        body = body.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        if lang == "sh":
            script.append(body)
        elif lang == "python":
            program = tmp_path / f"block_{index}.py"
            program.write_text(body)
            script.append(f"python {program}")

    server_log = tmp_path / "gateway.log"
    with server_log.open("wb") as log_file:
        server = subprocess.Popen(["bash", "-c", f"exec {serve} --port {port}"], cwd=workdir,
                                  env=env, stdout=subprocess.DEVNULL, stderr=log_file)
        try:
            _wait_for_port(port, server)
            done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=workdir, env=env,
                                  capture_output=True, text=True, timeout=180)
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    assert done.returncode == 0, done.stdout + done.stderr
    # The simulation of step 4, the management API of step 5, then exactly the output the page
    # shows for step 6.
    assert re.search(r"^effective_decision\s+refuse$", done.stdout, re.M), done.stdout
    assert re.search(r"^reason_code\s+ASKS_FOR_SECRETS$", done.stdout, re.M)
    assert "\nno_secrets revision 1\n" in done.stdout
    assert done.stdout.endswith(expected + "\n"), done.stdout
    served = workdir / "data" / "policies"
    assert (served / "no_secrets.pol").read_text() == \
        (workdir / "my-policies" / "no_secrets.pol").read_text()
    assert (served / "no_secrets.cases.json").is_file()
    assert (served / "support_bot.pol").is_file()  # seeded with the examples on first start
    # The token was announced once, and is the one in the data directory, for its owner only.
    token_file = workdir / "data" / "admin-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert token_file.read_text().strip() in server_log.read_text()

    status = subprocess.run(["git", "status", "--porcelain"], cwd=workdir, capture_output=True,
                            text=True, check=True)
    assert status.stdout == "", status.stdout
    # The language's own test suite, as `./dev test -q tests/policy_dsl` runs it in the clone.
    suite = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "tests/policy_dsl"], cwd=workdir, env=env, capture_output=True,
                           text=True, timeout=300)
    assert suite.returncode == 0, suite.stdout[-3000:] + suite.stderr[-2000:]
