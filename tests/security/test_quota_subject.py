"""Quota subjects: with a JWT, the quota subject is the token's own claim
(`[jwt] subject_claim`, default `sub`), so a user cannot spend another user's quota by sending
`X-Policy-User`; the label is still recorded as the caller's."""

from __future__ import annotations

from gateway.db import open_database
from gateway.identity.projects import ProjectStore


def _limit_users(secure, per_day: int) -> None:
    db = open_database(secure.gateway.db_path)
    try:
        ProjectStore(db).update(secure.project_a,
                                user_quota={"requests": {"daily": per_day}})
    finally:
        db.conn.close()


def test_a_jwt_user_cannot_spend_another_users_quota(make_secure):
    secure = make_secure()
    _limit_users(secure, 1)
    alice = secure.token("alice", secure.account_a)
    bob = secure.token("bob", secure.account_a)
    project = {"x-policy-project": secure.project_a}
    # Alice claims to be bob twice: her own quota is spent, bob's is untouched.
    first = secure.chat("hello", key=alice, headers={**project, "x-policy-user": "bob"})
    assert first.status_code == 200, first.text
    assert first.json()["policy"]["policy_user"] == "bob"  # the label, as sent
    second = secure.chat("hello", key=alice, headers={**project, "x-policy-user": "bob"})
    assert second.status_code == 429
    assert secure.chat("hello", key=bob, headers=project).status_code == 200


def test_the_subject_claim_is_configurable(make_secure):
    secure = make_secure(jwt_subject_claim="employee_id")
    _limit_users(secure, 1)
    token = secure.token("alice", secure.account_a, employee_id="e-42")
    same_employee = secure.token("alice-laptop", secure.account_a, employee_id="e-42")
    project = {"x-policy-project": secure.project_a}
    assert secure.chat("hello", key=token, headers=project).status_code == 200
    assert secure.chat("hello", key=same_employee, headers=project).status_code == 429
    missing = secure.token("nobody", secure.account_a)
    refused = secure.chat("hello", key=missing, headers=project)
    assert (refused.status_code, refused.json()["error"]["code"]) == (401, "invalid_token")
