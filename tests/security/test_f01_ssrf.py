"""SSRF: a caller's inline policy named `http://127.0.0.1:<port>/internal` as its
escalation path and the gateway POSTed the event there; simulate echoed the URL; a `.pol`
naming any URL did the same. Now escalation targets come from `[escalation]` only."""

from __future__ import annotations

import time

import httpx2
import orjson

from .conftest import GUARD


def _inline(path: str) -> str:
    return f'''policy v1 "mine" {{
  default allow
  escalation_path "{path}"
  rule grab {{ when input contains "hello" then escalate reason GRAB }}
}}'''


def test_an_inline_policy_cannot_send_the_event_to_a_url_of_its_choice(secure, capture):
    internal = capture.url + "/internal?x=1"
    for path in ("/policy/v1", "/v1"):
        response = secure.chat("hello there", path=path, policy=_inline(internal))
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_policy"
        assert "may not name an escalation URL" in error["message"]
    # Simulate refuses the same policy, and never says the URL back.
    simulation = httpx_post_simulate(secure, _inline(internal))
    assert simulation.status_code == 400 and internal not in simulation.text
    assert capture.wait_for(1, timeout=1.0) == []


def httpx_post_simulate(secure, policy):
    return httpx2.post(secure.url + "/policy/simulate", timeout=10,
                      headers={"authorization": f"Bearer {secure.keys['a']}"},
                      json={"model": "gpt-4o-mini", "policy": policy,
                            "messages": [{"role": "user", "content": "hello"}]})


def test_a_policy_file_naming_an_unlisted_url_fails_its_check_and_the_last_good_stays(
        secure, capture):
    unlisted = GUARD.replace('escalation_path "oncall"',
                             f'escalation_path "{capture.url}/internal"')
    with secure.admin() as admin:
        checked = admin.post("/policies/validate", content=unlisted,
                             headers={"content-type": "text/plain"}).json()
        assert checked["valid"] is False
        assert "not listed in [escalation] allowed_urls" in checked["diagnostics"][-1]["message"]
        written = admin.put("/policies/guard", content=unlisted,
                            headers={"content-type": "text/plain"})
        assert written.status_code == 400, written.text
        assert written.json()["error"]["code"] == "invalid_policy"
        assert "not listed in [escalation] allowed_urls" in written.text
        # Dropped into the directory by hand: refused at load, the last good one in force.
        (secure.policies / "guard.pol").write_text(unlisted)
        deadline = time.monotonic() + 10
        while not admin.get("/policies").json()["errors"] and time.monotonic() < deadline:
            time.sleep(0.1)  # the directory watcher reloads on its own
        [problem] = admin.get("/policies").json()["errors"]
        assert problem["path"] == str(secure.policies / "guard.pol")
        assert "allowed_urls" in problem["diagnostics"][0]["message"]
        assert admin.get("/policies/guard").json()["source"] == GUARD
    assert secure.chat("please, I want to speak to a human").status_code == 200
    [notice] = capture.wait_for(1)
    assert notice.path == "/oncall"  # the configured target, never the file's URL


def test_a_named_target_gets_the_event_through_its_connector_and_simulate_shows_its_name(
        secure, capture):
    user = "escalating-user"
    response = secure.chat("I want to speak to a human", headers={"x-policy-user": user})
    assert response.status_code == 200, response.text
    assert response.json()["policy"]["decision"] == "escalate"
    [notice] = capture.wait_for(1)
    event = orjson.loads(notice.body)
    assert (event["policy_user"], event["escalation_targets"]) == (user, ["oncall"])
    assert notice.headers["idempotency-key"] == event["event_id"]  # at-least-once: dedupe key
    with secure.admin() as admin:
        simulated = admin.post("/simulate", json={
            "project_id": secure.project_a, "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "speak to a human"}]})
    assert simulated.status_code == 200, simulated.text
    assert simulated.json()["obligations"]["escalation_path"] == "oncall"
    assert capture.url not in simulated.text
    assert len(capture.wait_for(2, timeout=0.5)) == 1  # a simulation notifies nobody


def test_an_allowlisted_url_is_delivered_and_never_echoed(make_secure, capture):
    listed = capture.url + "/listed"
    secure = make_secure(escalation={"allowed_urls": [listed]})
    source = GUARD.replace('escalation_path "oncall"', f'escalation_path "{listed}"')
    with secure.admin() as admin:
        assert admin.put("/policies/guard", content=source,
                         headers={"content-type": "text/plain"}).status_code == 200
        simulated = admin.post("/simulate", json={
            "project_id": secure.project_a, "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "speak to a human"}]})
    assert simulated.json()["obligations"]["escalation_path"] == "listed-url"
    assert listed not in simulated.text
    assert secure.chat("speak to a human").status_code == 200
    [notice] = capture.wait_for(1)
    assert notice.path == "/listed"


def test_the_cli_checks_escalation_paths_as_the_server_does(secure, capture, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    config = tmp_path / "cli.toml"
    config.write_text(f'[database]\npath = "{secure.gateway.db_path}"\n\n'
                      f'[policies]\ndirectory = "{secure.policies}"\n\n'
                      f'[escalation.targets.oncall]\nurl = "{capture.url}/oncall"\n')
    upload = tmp_path / "guard.pol"
    upload.write_text(GUARD.replace('escalation_path "oncall"',
                                    f'escalation_path "{capture.url}/internal"'))
    for command in (("policies", "validate"), ("policies", "add")):
        result = subprocess.run(
            [sys.executable, "-m", "gateway", *command, str(upload), "--config", str(config)],
            capture_output=True, text=True, timeout=60, cwd=repo,
            env={**os.environ, "PYTHONPATH": str(repo)})
        assert result.returncode != 0, command
        assert "not listed in [escalation] allowed_urls" in result.stdout + result.stderr
    assert (secure.policies / "guard.pol").read_text() == GUARD
