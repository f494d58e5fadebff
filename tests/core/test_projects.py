"""Projects and grants on both stores (the `backend` fixture): the store's round trips, every
validation error, and the snapshots."""

import pytest

from dsl import QuotaLimit
from gateway.db import data_version, open_database
from gateway.errors import ProjectError
from gateway.identity.keys import IdentityStore
from gateway.identity.projects import ProjectStore, load_grants, load_projects


@pytest.fixture
def db(backend):
    return backend.open()


@pytest.fixture
def account(db):
    return IdentityStore(db).create_account("acme", "control")


@pytest.fixture
def store(db):
    return ProjectStore(db)


def test_create_get_list_round_trip(store, account, db):
    other = IdentityStore(db).create_account("other", "advanced")
    created = store.create(
        "proj_support_bot", account_id=account.id, name="Support bot", policy_id="support_bot",
        budget={"requests": {"daily": 1000}, "tokens": {"monthly": 500000}},
        user_quota={"requests": {"minute": 10, "hour": 0}}, allow_inline_policy=True)
    store.create("proj_other", account_id=other.id, name="Other")

    fetched = store.get("proj_support_bot")
    assert fetched == created
    assert (fetched.project_label, fetched.status, fetched.policy_id) == (
        "Support bot", "active", "support_bot")
    assert fetched.budget == {"requests": {"daily": 1000}, "tokens": {"monthly": 500000}}
    assert fetched.allow_inline_policy is True
    assert fetched.created_at == fetched.updated_at != ""
    assert [p.id for p in store.list(account.id)] == ["proj_support_bot"]
    assert [p.id for p in store.list()] == ["proj_other", "proj_support_bot"]


def test_defaults_and_quota_limits(store, account):
    project = store.create("proj_min", account_id=account.id, name="Minimal")
    assert (project.policy_id, project.budget, project.user_quota, project.allow_inline_policy) \
        == (None, {}, {}, False)
    limited = store.create("proj_lim", account_id=account.id, name="Limited",
                           user_quota={"requests": {"minute": 10, "hour": 0},
                                       "tokens": {"weekly": 7}})
    # 0 means unlimited, so it is not a limit to enforce.
    assert limited.user_quota_limits == (QuotaLimit("requests", "minute", 10),
                                         QuotaLimit("tokens", "weekly", 7))
    assert limited.budget_limits == ()


def test_as_dict_is_a_detached_copy(store, account):
    project = store.create("proj_a", account_id=account.id, name="A",
                           budget={"requests": {"daily": 1}})
    exported = project.as_dict()
    exported["budget"]["requests"]["daily"] = 99
    assert project.budget == {"requests": {"daily": 1}}
    assert set(exported) == {"id", "account_id", "name", "status", "policy_id", "budget",
                             "user_quota", "allow_inline_policy", "created_at", "updated_at"}


def test_update_each_field_and_unlink(store, account):
    store.create("proj_a", account_id=account.id, name="A", policy_id="p1")
    updated = store.update("proj_a", name="A2", status="disabled", policy_id="p2",
                           budget={"tokens": {"daily": 5}}, user_quota={"requests": {"hour": 3}},
                           allow_inline_policy=True)
    assert store.get("proj_a") == updated
    assert (updated.name, updated.status, updated.policy_id, updated.allow_inline_policy) == (
        "A2", "disabled", "p2", True)
    assert updated.budget == {"tokens": {"daily": 5}}
    assert updated.user_quota == {"requests": {"hour": 3}}
    assert not updated.is_active
    unlinked = store.update("proj_a", policy_id=None)
    assert store.get("proj_a").policy_id is None and unlinked.name == "A2"


def test_known_policies_refuse_an_unknown_policy(store, account):
    with pytest.raises(ProjectError, match="unknown policy 'ghost'"):
        store.create("proj_a", account_id=account.id, name="A", policy_id="ghost",
                     known_policies={"support_bot"})
    store.create("proj_a", account_id=account.id, name="A")
    with pytest.raises(ProjectError, match="unknown policy 'ghost'"):
        store.update("proj_a", policy_id="ghost", known_policies={"support_bot"})
    assert store.update("proj_a", policy_id="support_bot",
                        known_policies={"support_bot"}).policy_id == "support_bot"


@pytest.mark.parametrize("slug", ["ab", "proj_support_bot", "0-x", "a" * 64])
def test_valid_slugs(store, account, slug):
    assert store.create(slug, account_id=account.id, name="x").id == slug


@pytest.mark.parametrize("slug", ["a", "", "Proj", "-abc", "_abc", "a b", "a" * 65, "abc\n",
                                  "proj.x", "proj/x", "é-proj"])
def test_bad_slugs(store, account, slug):
    with pytest.raises(ProjectError, match="invalid project id"):
        store.create(slug, account_id=account.id, name="x")
    assert store.list() == []


@pytest.mark.parametrize("quota, message", [
    ([], "must be an object"),
    ("1000", "must be an object"),
    ({"dollars": {"daily": 1}}, "unknown unit 'dollars'"),
    ({"requests": {"day": 1}}, "unknown window 'day'"),
    ({"requests": 1000}, r"budget.requests must be an object"),
    ({"requests": {"daily": -1}}, "non-negative integer"),
    ({"requests": {"daily": 1.5}}, "non-negative integer"),
    ({"requests": {"daily": True}}, "non-negative integer"),
    ({"requests": {"daily": "10"}}, "non-negative integer"),
    ({"requests": {"daily": None}}, "non-negative integer"),
])
def test_bad_quota_shapes(store, account, quota, message):
    with pytest.raises(ProjectError, match=message):
        store.create("proj_a", account_id=account.id, name="A", budget=quota)
    with pytest.raises(ProjectError, match=message.replace("budget", "user_quota")):
        store.create("proj_a", account_id=account.id, name="A", user_quota=quota)
    store.create("proj_a", account_id=account.id, name="A")
    with pytest.raises(ProjectError, match=message):
        store.update("proj_a", budget=quota)
    assert store.get("proj_a").budget == {}


def test_create_errors(store, account):
    with pytest.raises(ProjectError, match="unknown account 'acct_missing'"):
        store.create("proj_a", account_id="acct_missing", name="A")
    with pytest.raises(ProjectError, match="name must be a non-empty"):
        store.create("proj_a", account_id=account.id, name="  ")
    with pytest.raises(ProjectError, match="invalid status 'paused'"):
        store.create("proj_a", account_id=account.id, name="A", status="paused")
    with pytest.raises(ProjectError, match="allow_inline_policy must be true or false"):
        store.create("proj_a", account_id=account.id, name="A", allow_inline_policy="yes")
    store.create("proj_a", account_id=account.id, name="A")
    with pytest.raises(ProjectError, match="project 'proj_a' already exists"):
        store.create("proj_a", account_id=account.id, name="Again")
    assert store.get("proj_a").name == "A"


def test_update_errors_leave_the_project_unchanged(store, account):
    before = store.create("proj_a", account_id=account.id, name="A")
    with pytest.raises(ProjectError, match="unknown project 'proj_b'"):
        store.update("proj_b", name="B")
    with pytest.raises(ProjectError, match="cannot update account_id"):
        store.update("proj_a", account_id="acct_x")
    with pytest.raises(ProjectError, match="invalid status 'on'"):
        store.update("proj_a", status="on")
    with pytest.raises(ProjectError, match="name must be a non-empty"):
        store.update("proj_a", name="")
    with pytest.raises(ProjectError, match="allow_inline_policy must be true or false"):
        store.update("proj_a", allow_inline_policy=1)
    with pytest.raises(ProjectError, match="unknown project 'nope'"):
        store.get("nope")
    assert store.get("proj_a") == before


def test_grants(store, account, db):
    store.create("proj_a", account_id=account.id, name="A")
    store.create("proj_b", account_id=account.id, name="B")
    store.grant("alice", "proj_a")
    store.grant("alice", "proj_a")  # idempotent
    store.grant("alice", "proj_b")
    store.grant("bob", "proj_b")
    assert store.grants_for("alice") == {"proj_a", "proj_b"}
    assert store.grants_for("carol") == frozenset()
    assert load_grants(db) == {"alice": frozenset({"proj_a", "proj_b"}),
                               "bob": frozenset({"proj_b"})}
    store.revoke_grant("alice", "proj_a")
    assert store.grants_for("alice") == {"proj_b"}
    with pytest.raises(ProjectError, match="user 'alice' has no grant on project 'proj_a'"):
        store.revoke_grant("alice", "proj_a")
    with pytest.raises(ProjectError, match="unknown project 'proj_x'"):
        store.grant("alice", "proj_x")
    with pytest.raises(ProjectError, match="user id must be a non-empty"):
        store.grant(" ", "proj_a")
    assert load_grants(db) == {"alice": frozenset({"proj_b"}), "bob": frozenset({"proj_b"})}


def test_snapshots_from_another_connection(backend, account, store):
    # `account` and `store` live on the db fixture's connection; the server has its own.
    server_db = backend.open()
    assert load_projects(server_db) == {}
    created = store.create("proj_a", account_id=account.id, name="A",
                           budget={"tokens": {"daily": 10}})
    store.grant("u1", "proj_a")
    assert load_projects(server_db) == {"proj_a": created}
    assert load_grants(server_db) == {"u1": frozenset({"proj_a"})}


def test_sqlite_data_version_tells_the_server_to_take_new_snapshots(tmp_path):
    writer = open_database(tmp_path / "gw.db")
    account = IdentityStore(writer).create_account("acme", "control")
    server_db = open_database(tmp_path / "gw.db")
    version = data_version(server_db)
    ProjectStore(writer).create("proj_a", account_id=account.id, name="A")
    assert data_version(server_db) != version
