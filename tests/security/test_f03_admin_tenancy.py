"""JWT admins were global: an admin JWT of account B created keys for account A's
projects, listed every account's keys and patched any project. Now an account's admin manages
its own account only, another account's resource answers like a missing one, and only the
admin token or the configured super-admin role crosses accounts."""

from __future__ import annotations

from .conftest import GUARD, SUPER_ADMIN_ROLE


def test_an_account_admin_cannot_touch_another_accounts_resources(secure):
    admin_b = secure.token("boss-b", secure.account_b, ["admin"])
    with secure.admin() as root:
        key_a = root.post("/keys", json={"project_id": secure.project_a}).json()
    with secure.admin(admin_b) as b:
        # The same answers as for ids that do not exist.
        for method, path, body in [
            ("POST", "/keys", {"project_id": secure.project_a}),
            ("GET", f"/projects/{secure.project_a}", None),
            ("PATCH", f"/projects/{secure.project_a}", {"status": "disabled"}),
            ("GET", f"/projects/{secure.project_a}/usage", None),
            ("POST", "/simulate", {"project_id": secure.project_a, "model": "gpt-4o-mini",
                                   "messages": [{"role": "user", "content": "hi"}]}),
        ]:
            theirs = b.request(method, path, json=body)
            nothing = b.request(method, path.replace(secure.project_a, "proj_nope"),
                                json=body and {k: (v if v != secure.project_a else "proj_nope")
                                               for k, v in body.items()})
            assert theirs.status_code == nothing.status_code == 404, (path, theirs.text)
            assert theirs.json()["error"]["message"].replace(secure.project_a, "proj_nope") \
                == nothing.json()["error"]["message"] == "No project 'proj_nope'."
        revoked = b.post(f"/keys/{key_a['id']}/revoke")
        unknown = b.post("/keys/key_nope/revoke")
        assert revoked.status_code == unknown.status_code == 404
        assert revoked.json()["error"]["message"].replace(key_a["id"], "key_nope") == \
            unknown.json()["error"]["message"]
        for account in (secure.account_a, None):
            params = {"account_id": account} if account else {}
            listed_keys = b.get("/keys", params=params).json()["data"]
            assert {k["account_id"] for k in listed_keys} <= {secure.account_b}
            listed_projects = b.get("/projects", params=params).json()["data"]
            assert {p["id"] for p in listed_projects} <= {secure.project_b}
        created = b.post("/projects", json={"id": "proj_planted", "account_id": secure.account_a})
        assert created.status_code == 400 and "unknown account" in created.text
        # Policies are shared by every account: an account's admin reads them, never writes.
        assert b.get("/policies/guard").status_code == 200
        written = b.put("/policies/guard", content=GUARD.replace("pineapple", "kiwi"),
                        headers={"content-type": "text/plain"})
        assert (written.status_code, written.json()["error"]["code"]) == (403, "admin_required")
        # Its own account works.
        assert b.get(f"/projects/{secure.project_b}").status_code == 200
        own = b.post("/keys", json={"project_id": secure.project_b})
        assert own.status_code == 201 and own.json()["account_id"] == secure.account_b
    # Nothing of account A changed.
    assert secure.chat("hello").status_code == 200
    assert secure.chat("hello", key=key_a["key"]).status_code == 200
    assert (secure.policies / "guard.pol").read_text() == GUARD


def test_the_admin_token_and_the_super_admin_role_cross_accounts(secure):
    operator = secure.token("op", secure.account_b, ["admin", SUPER_ADMIN_ROLE])
    for credential in (operator, None):
        with (secure.admin(credential) if credential else secure.admin()) as admin:
            listed = admin.get("/projects").json()["data"]
            assert {p["id"] for p in listed} >= {secure.project_a, secure.project_b}
            assert admin.post("/keys", json={"project_id": secure.project_a}).status_code == 201
            assert admin.get(f"/projects/{secure.project_a}").status_code == 200
