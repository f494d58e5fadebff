"""Accounts and keys on both stores (the `backend` fixture), and the SQLite snapshot's cheap
change checks."""

import pytest

import gateway.identity.keys as keys_module
from gateway.db import open_database
from gateway.errors import ApiKeyRevoked, IdentityError, InvalidApiKey
from gateway.identity.keys import IdentityCache, IdentityStore, credential_from_headers


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "gw.db"


def test_key_is_stored_only_as_hash_and_preview(db_path):
    store = IdentityStore(open_database(db_path))
    account = store.create_account("acme", "control")
    key, plaintext = store.create_key(account.id, label="ci")
    assert plaintext.startswith("ak_") and len(plaintext) >= 3 + 32
    assert key.key_preview == f"{plaintext[:6]}...{plaintext[-4:]}"
    assert plaintext.encode() not in db_path.read_bytes() + (db_path.with_suffix(".db-wal").read_bytes()
                                                              if db_path.with_suffix(".db-wal").exists() else b"")


def test_revocation_by_another_connection_applies_on_next_request(backend):
    writer = IdentityStore(backend.open())
    account = writer.create_account("acme", "free")
    key, plaintext = writer.create_key(account.id)
    cache = backend.cache()  # the serving process's own connection
    assert cache.authenticate_key(plaintext).user_id == f"key:{key.id}"
    writer.revoke_key(key.id)
    with pytest.raises(ApiKeyRevoked):
        cache.authenticate_key(plaintext)


def test_event_and_quota_writes_do_not_reload_the_snapshot(db_path, monkeypatch):
    writer = IdentityStore(open_database(db_path))
    account = writer.create_account("acme", "free")
    _key, plaintext = writer.create_key(account.id)
    cache = IdentityCache(open_database(db_path))
    cache.authenticate_key(plaintext)
    loads = []
    original = keys_module.load_snapshot
    monkeypatch.setattr(keys_module, "load_snapshot",
                        lambda db: (loads.append(1), original(db))[1])
    other = open_database(db_path)
    with other.conn:  # what the event writer and the quota store commit all the time
        other.conn.execute("INSERT INTO quota_reservations VALUES ('r1', 0, 1, '[]')")
    cache.authenticate_key(plaintext)
    assert loads == []
    # A change to any identity table does reload, whoever makes it.
    for statement in ("UPDATE accounts SET name = 'acme2'",
                      "UPDATE api_keys SET label = 'laptop'",
                      "DELETE FROM api_keys WHERE id = 'no such key'"):  # changes nothing
        with other.conn:
            other.conn.execute(statement)
        cache.authenticate_key(plaintext)
    writer.create_key(account.id)
    cache.authenticate_key(plaintext)
    assert loads == [1, 1, 1]


def test_unknown_key_and_bad_arguments(backend):
    store = IdentityStore(backend.open())
    cache = backend.cache()
    with pytest.raises(InvalidApiKey):
        cache.authenticate_key("ak_" + "x" * 40)
    with pytest.raises(IdentityError, match="unknown plan"):
        store.create_account("a", "platinum")
    with pytest.raises(IdentityError, match="unknown account"):
        store.create_key("acct_missing")
    with pytest.raises(IdentityError, match="unknown key"):
        store.revoke_key("key_missing")


@pytest.mark.parametrize("headers, expected", [
    ({"authorization": "Bearer ak_1"}, "ak_1"),
    ({"authorization": "bearer   ak_2  "}, "ak_2"),
    ({"x-api-key": "ak_3"}, "ak_3"),
    ({"authorization": "Basic abc", "x-api-key": "ak_4"}, "ak_4"),
    ({"authorization": "Bearer "}, None),
    ({}, None),
])
def test_credential_from_headers(headers, expected):
    assert credential_from_headers(headers) == expected


def test_keys_list_by_account_and_survive_a_new_connection(backend):
    store = IdentityStore(backend.open())
    acme, other = store.create_account("acme", "free"), store.create_account("other", "control")
    first, _ = store.create_key(acme.id, label="one")
    second, plaintext = store.create_key(acme.id, label="two")
    store.create_key(other.id)
    again = IdentityStore(backend.open())
    assert {k.id for k in again.list_keys(acme.id)} == {first.id, second.id}
    assert len(again.list_keys()) == 3
    assert again.get_account(other.id).plan == "control"
    revoked = again.revoke_key(second.id)
    assert revoked.revoked and [k.revoked for k in store.list_keys(acme.id)
                                if k.id == second.id] == [True]
    cache = backend.cache()
    with pytest.raises(ApiKeyRevoked):
        cache.authenticate_key(plaintext)


def test_a_request_checks_the_file_once_and_sees_a_project_change_on_its_next_request(
        db_path, monkeypatch):
    from gateway.errors import ProjectDisabled
    from gateway.identity.credentials import authenticate, resolve_project
    from gateway.identity.projects import ProjectStore

    db = open_database(db_path)
    writer = IdentityStore(db)
    account = writer.create_account("acme", "control")
    ProjectStore(db).create(project_id="proj", account_id=account.id, name="Proj")
    _key, plaintext = writer.create_key(account.id, project_id="proj")
    cache = IdentityCache(open_database(db_path))
    checks = []
    original = keys_module.data_version
    monkeypatch.setattr(keys_module, "data_version",
                        lambda conn: (checks.append(1), original(conn))[1])

    def governed_request() -> None:  # what the governed surface does, in this order
        caller = authenticate(cache, None, plaintext)
        resolve_project(cache, caller, None)

    governed_request()
    assert checks == [1]  # authentication's check; the project comes from the same snapshot
    ProjectStore(db).update("proj", status="disabled")  # another connection, another process
    with pytest.raises(ProjectDisabled):
        governed_request()
