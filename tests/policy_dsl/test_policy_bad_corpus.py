"""The bad-policy corpus: each `bad/NAME.pol` (or `.json`) with the diagnostics it must produce in
`bad/NAME.expected`, and every diagnostic code the checker can emit covered by some entry.

Regenerate the expected files after a deliberate change with `DSL_UPDATE_CORPUS=1` and review
the diff.
"""

import os
import re
from pathlib import Path

import pytest

import dsl
import dsl.checker
from dsl.diagnostic_codes import CODES, NOT_FROM_FILES

BAD = Path(__file__).resolve().parent / "bad"
SOURCES = sorted(p for p in BAD.iterdir() if p.suffix in (".pol", ".json"))
DSL = Path(dsl.__file__).resolve().parent
_LIMITS = re.compile(r"^# limits: (.*)$", re.M)


def rendered(path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    source = path.read_text(encoding="utf-8")
    directive = _LIMITS.search(source)
    for setting in directive.group(1).split() if directive else ():
        name, value = setting.split("=")
        monkeypatch.setattr(dsl.checker, name, int(value))
    lines = []
    for d in dsl.check(source, path.name):
        lines.append(f"{d.line}:{d.column}: {d.severity} [{d.code}] {d.message}")
        if d.hint:
            lines.append(f"    help: {d.hint}")
    return "\n".join(lines) + "\n"


def expected_codes() -> set[str]:
    found = set()
    for path in BAD.glob("*.expected"):
        found |= set(re.findall(r"^\d+:\d+: \w+ \[([a-z-]+)\]", path.read_text(), flags=re.M))
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_bad_policy_gives_exactly_the_expected_diagnostics(path, monkeypatch):
    got = rendered(path, monkeypatch)
    expected = path.with_suffix(".expected")
    if os.environ.get("DSL_UPDATE_CORPUS"):
        expected.write_text(got, encoding="utf-8")
    assert got == expected.read_text(encoding="utf-8")


def test_every_corpus_entry_has_an_error():
    for path in BAD.glob("*.expected"):
        assert " error [" in path.read_text() or " warning [" in path.read_text(), path.name


def test_every_diagnostic_code_has_a_corpus_entry():
    assert sorted(set(CODES) - NOT_FROM_FILES - expected_codes()) == []


def test_every_code_the_source_emits_is_registered():
    used = set()
    for path in DSL.rglob("*.py"):
        used |= set(re.findall(r'(?:code=|\.err\(|\.warn\()\s*"([a-z-]+)"', path.read_text()))
    assert len(used) > 60
    assert sorted(used - set(CODES)) == []
    assert sorted(set(CODES) - used) == []


def test_no_corpus_entry_repeats_a_diagnostic():
    for path in BAD.glob("*.expected"):
        lines = [line for line in path.read_text().splitlines() if not line.startswith(" ")]
        assert len(lines) == len(set(lines)), path.name
