"""The policy registry: loading the directory, revisions on both stores (the `backend`
fixture), and adding files."""

import json
import os
import re
import shutil
import threading
from pathlib import Path

import pytest

import dsl
from gateway.admin.registry import PolicyRegistry, add_policy_file, list_revisions
from gateway.errors import PolicyDirectoryError, PolicyFileError

REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"

SIMPLE = '''policy v1 "{id}" {{
  name "{name}"
  default allow
  denylist words = ["{word}"]
  rule words {{ when input contains any of words then refuse }}
}}
'''
BROKEN = 'policy v1 "broken" {\n  default alow\n}\n'


def simple(policy_id: str, name: str = "Simple", word: str = "forbidden") -> str:
    return SIMPLE.format(id=policy_id, name=name, word=word)


@pytest.fixture
def db(backend):
    return backend.open()


@pytest.fixture
def policies(tmp_path):
    folder = tmp_path / "policies"
    folder.mkdir()
    return folder


def test_repository_examples_all_load_at_revision_one(tmp_path, db):
    folder = tmp_path / "examples"
    shutil.copytree(REPO_POLICIES, folder)
    files = [p for p in folder.iterdir()
             if p.suffix in (".pol", ".json") and not p.name.endswith(".cases.json")]
    # Each file names its own id in its header; the registry must key by that, not the file name.
    expected_ids = {re.search(r'policy\s+v1\s+"([^"]+)"', p.read_text()).group(1)
                    for p in files if p.suffix == ".pol"}
    assert len(files) >= 5 and len(expected_ids) == len(files)

    registry = PolicyRegistry.load(folder, db)

    assert registry.errors == {}
    assert set(registry.policies) == expected_ids
    assert {p.revision for p in registry.policies.values()} == {1}
    assert sorted((c.policy_id, c.revision, c.edit_type) for c in registry.changes) == sorted(
        (pid, 1, "create") for pid in expected_ids)
    for loaded in registry.policies.values():
        assert isinstance(loaded.policy, dsl.CompiledPolicy)
        assert loaded.policy.policy_id == loaded.policy_id
        assert Path(loaded.path).read_text() == loaded.source
        assert loaded.name == loaded.policy.name


def test_broken_file_is_reported_and_not_loaded(policies, db):
    (policies / "good.pol").write_text(simple("good"))
    (policies / "broken.pol").write_text(BROKEN)

    registry = PolicyRegistry.load(policies, db)

    assert set(registry.policies) == {"good"}
    [(path, diagnostics)] = registry.errors.items()
    assert path == str(policies / "broken.pol")
    first = diagnostics[0]
    assert (first.file, first.line, first.severity) == (path, 2, "error")
    assert "alow" in first.message
    assert [c.policy_id for c in registry.changes] == ["good"]
    assert list_revisions(db, "broken") == []


def test_reload_unchanged_keeps_revisions_and_other_processes_agree(backend, policies, db):
    (policies / "a.pol").write_text(simple("a"))
    (policies / "b.pol").write_text(simple("b"))
    first = PolicyRegistry.load(policies, db)
    again = PolicyRegistry.load(policies, db)
    other_process = PolicyRegistry.load(policies, backend.open())

    assert again.changes == () and other_process.changes == ()
    for registry in (again, other_process):
        assert {k: (v.revision, v.sha256) for k, v in registry.policies.items()} == {
            k: (v.revision, v.sha256) for k, v in first.policies.items()}
    assert [r.revision for r in list_revisions(db, "a")] == [1]


def test_edited_file_gets_a_new_revision_and_a_change(policies, db):
    path = policies / "a.pol"
    path.write_text(simple("a"))
    PolicyRegistry.load(policies, db)
    edited = simple("a", word="banned")
    path.write_text(edited)

    registry = PolicyRegistry.load(policies, db)

    assert registry.policies["a"].revision == 2
    [change] = registry.changes
    assert (change.policy_id, change.revision, change.edit_type, change.source) == (
        "a", 2, "update", edited)
    assert change.sha256 == registry.policies["a"].sha256
    assert [(r.revision, r.edit_type) for r in list_revisions(db, "a")] == [
        (1, "create"), (2, "update")]


def test_duplicate_id_is_an_error_for_the_later_file(policies, db):
    (policies / "first.pol").write_text(simple("same", name="First"))
    (policies / "second.pol").write_text(simple("same", name="Second"))

    registry = PolicyRegistry.load(policies, db)

    assert registry.policies["same"].name == "First"
    [diagnostic] = registry.errors[str(policies / "second.pol")]
    assert diagnostic.severity == "error"
    assert "'same' is already defined in" in diagnostic.message
    assert str(policies / "first.pol") in diagnostic.message
    assert (diagnostic.line, diagnostic.column) == (1, 11)  # the quoted id in the header


def test_skips_golden_cases_hidden_files_and_subdirectories(policies, db):
    (policies / "a.pol").write_text(simple("a"))
    (policies / "a.cases.json").write_text(json.dumps([{"request": {}, "expect": "allow"}]))
    (policies / ".a.pol.tmp").write_text("partial")
    (policies / ".hidden.pol").write_text(BROKEN)
    (policies / "notes.txt").write_text("not a policy")
    (policies / "nested").mkdir()
    (policies / "nested" / "b.pol").write_text(simple("b"))

    registry = PolicyRegistry.load(policies, db)

    assert set(registry.policies) == {"a"} and registry.errors == {}


def test_json_policy_document_loads(policies, db):
    doc = {"policy_id": "json_bot", "name": "JSON bot",
           "config": {"rules": {"denylist": ["idiot"], "enforcement_action": "block"}}}
    (policies / "json_bot.json").write_text(json.dumps(doc))
    registry = PolicyRegistry.load(policies, db)
    assert registry.policies["json_bot"].name == "JSON bot"
    assert registry.policies["json_bot"].revision == 1


def test_missing_directory(tmp_path, db):
    with pytest.raises(PolicyDirectoryError, match="does not exist"):
        PolicyRegistry.load(tmp_path / "nowhere", db)


def test_last_good_policy_stays_in_force_when_its_file_breaks(policies, db):
    path = policies / "a.pol"
    path.write_text(simple("a"))
    good = PolicyRegistry.load(policies, db)
    path.write_text(simple("a").replace("default allow", "default alow"))

    without_previous = PolicyRegistry.load(policies, db)
    with_previous = PolicyRegistry.load(policies, db, previous=good)

    assert "a" not in without_previous.policies
    assert with_previous.policies["a"] is good.policies["a"]
    assert str(path) in with_previous.errors
    # A broken file is not a deletion: no revision is recorded for it.
    assert without_previous.changes == () and with_previous.changes == ()
    assert [r.edit_type for r in list_revisions(db, "a")] == ["create"]


def test_removed_file_records_a_delete_and_readding_creates(policies, db):
    path = policies / "a.pol"
    path.write_text(simple("a"))
    PolicyRegistry.load(policies, db)
    path.unlink()

    gone = PolicyRegistry.load(policies, db)
    assert "a" not in gone.policies
    [change] = gone.changes
    assert (change.policy_id, change.revision, change.edit_type) == ("a", 2, "delete")
    assert change.source == simple("a")  # the config snapshot of what was deleted
    assert PolicyRegistry.load(policies, db).changes == ()

    path.write_text(simple("a"))
    back = PolicyRegistry.load(policies, db)
    assert back.policies["a"].revision == 3
    assert [(c.revision, c.edit_type) for c in back.changes] == [(3, "create")]


@pytest.mark.parametrize("round_", range(5))  # races are probabilistic: try a few times
def test_concurrent_loads_agree_on_revisions(backend, policies: Path, round_: int) -> None:
    for n in range(10):
        (policies / f"p{n}.pol").write_text(simple(f"p{n}"))
    barrier = threading.Barrier(4, timeout=30)  # a failed opener must not hang the rest
    results: list[PolicyRegistry] = []
    failures: list[BaseException] = []

    def load() -> None:
        try:
            own = backend.open()
            barrier.wait()
            results.append(PolicyRegistry.load(policies, own))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert all({p.revision for p in r.policies.values()} == {1} for r in results)
    # Exactly one of the loads recorded each policy's creation.
    assert sorted(c.policy_id for r in results for c in r.changes) == [f"p{n}" for n in range(10)]


def test_add_policy_file_places_it_under_its_id(tmp_path, policies, db):
    source = tmp_path / "my upload.pol"
    source.write_text(simple("support_v2"))

    loaded = add_policy_file(source, policies, db)

    target = policies / "support_v2.pol"
    assert loaded.path == str(target) and target.read_text() == simple("support_v2")
    assert (loaded.policy_id, loaded.revision) == ("support_v2", 1)
    assert PolicyRegistry.load(policies, db).policies["support_v2"].revision == 1
    # The same content again changes nothing; new content is the next revision.
    assert add_policy_file(source, policies, db).revision == 1
    source.write_text(simple("support_v2", word="other"))
    assert add_policy_file(source, policies, db).revision == 2
    assert target.read_text() == simple("support_v2", word="other")
    assert sorted(p.name for p in policies.iterdir()) == ["support_v2.pol"]


def test_add_json_policy_keeps_json_extension(tmp_path, policies, db):
    source = tmp_path / "upload.txt"
    source.write_text(json.dumps({"policy_id": "json_bot", "name": "JSON bot"}))
    assert add_policy_file(source, policies, db).path == str(policies / "json_bot.json")


def test_add_policy_file_refuses_a_failing_file(tmp_path, policies, db):
    source = tmp_path / "bad.pol"
    source.write_text(BROKEN)
    with pytest.raises(PolicyFileError) as caught:
        add_policy_file(source, policies, db)
    assert caught.value.diagnostics[0].line == 2
    rendered = caught.value.render()
    assert rendered.startswith(f"{source}:2:11: error:") and "^" in rendered
    assert list(policies.iterdir()) == []


def test_add_policy_file_refuses_an_id_defined_by_another_file(tmp_path, policies, db):
    (policies / "legacy_name.pol").write_text(simple("shared"))
    source = tmp_path / "upload.pol"
    source.write_text(simple("shared", word="new"))
    with pytest.raises(PolicyFileError, match=r"already defined in .*legacy_name\.pol"):
        add_policy_file(source, policies, db)
    assert sorted(p.name for p in policies.iterdir()) == ["legacy_name.pol"]


def test_add_policy_file_is_atomic(tmp_path, policies, db, monkeypatch):
    target = policies / "a.pol"
    target.write_text(simple("a"))
    source = tmp_path / "a.pol"
    source.write_text(simple("a", word="changed"))

    def interrupted(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(OSError, match="disk full"):
        add_policy_file(source, policies, db)

    assert target.read_text() == simple("a")  # old content intact
    assert sorted(p.name for p in policies.iterdir()) == ["a.pol"]  # no temporary file left
    assert [r.sha256 for r in list_revisions(db, "a")] == [
        PolicyRegistry.load(policies, db).policies["a"].sha256]
