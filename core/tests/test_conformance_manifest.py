"""The conformance matrix stays true: the manifests in conformance/ and the markers of the
tests agree with each other, every server-side statement is tested or says why not, and
docs/conformance.md is what conformance/report.py generates."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("conformance_report",
                                                  ROOT / "conformance" / "report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


report = _load_report()
MANIFESTS = report.load_manifests()
TESTS = report.collect_tests()
IDS = [m.stem for m in MANIFESTS]


def test_the_mqtt_5_manifest_is_there_and_complete() -> None:
    manifests = {m.stem: m for m in MANIFESTS}
    assert "mqtt-5.0" in manifests
    five = manifests["mqtt-5.0"]
    assert (five.spec, five.source) == ("MQTT 5.0", "OASIS Standard, 7 March 2019")
    # appendix B of the standard: 247 statements in chapters 1 to 4, four in chapter 6
    assert len(five.statements) == 251
    tested = sum(s.status == "tested" for s in five.statements)
    assert tested > 174, f"only {tested} MQTT 5.0 statements are tested directly"


@pytest.mark.parametrize("manifest", MANIFESTS, ids=IDS)
def test_statement_ids_are_well_formed_and_unique(manifest: Any) -> None:
    ids = [s.id for s in manifest.statements]
    duplicated = [i for i, n in Counter(ids).items() if n > 1]
    assert not duplicated, f"{manifest.path.name}: duplicated ids {duplicated}"
    bad = [i for i in ids if not report.ID_PATTERN.match(i)]
    assert not bad, f"malformed ids {bad}"


@pytest.mark.parametrize("manifest", MANIFESTS, ids=IDS)
def test_every_entry_has_the_schema_fields(manifest: Any) -> None:
    problems = []
    for s in manifest.statements:
        if s.binds not in report.BINDS:
            problems.append(f"{s.id}: binds {s.binds!r}")
        if s.status not in report.STATUSES:
            problems.append(f"{s.id}: status {s.status!r}")
        if not s.section or not s.summary.strip():
            problems.append(f"{s.id}: no section or summary")
        if s.status in ("not-applicable", "untestable-from-outside") and not s.reason.strip():
            problems.append(f"{s.id}: {s.status} without a reason")
    assert not problems, problems


@pytest.mark.parametrize("manifest", MANIFESTS, ids=IDS)
def test_every_listed_test_exists(manifest: Any) -> None:
    missing = [(s.id, t) for s in manifest.statements
               for t in s.tests if t not in TESTS]
    assert not missing, f"manifest entries name tests that do not exist: {missing}"


@pytest.mark.parametrize("manifest", MANIFESTS, ids=IDS)
def test_tested_statements_list_tests_and_server_side_ones_are_covered(manifest: Any) -> None:
    problems = []
    for s in manifest.statements:
        if s.status == "tested" and not s.tests:
            problems.append(f"{s.id} is tested but lists no test")
        if s.server_side and not s.tests and not s.reason.strip():
            problems.append(f"{s.id} binds the server and has neither a test nor a reason")
    assert not problems, problems


@pytest.mark.parametrize("manifest", MANIFESTS, ids=IDS)
def test_markers_and_manifest_agree(manifest: Any) -> None:
    """A tested statement lists exactly the tests whose marker names it."""
    marked = report.marked(TESTS, manifest.marker)
    known = {s.id: s for s in manifest.statements}
    unknown = {sid: tests for sid, tests in marked.items() if sid not in known}
    assert not unknown, f"tests name statements missing from {manifest.path.name}: {unknown}"
    problems = []
    for sid, statement in known.items():
        tests = marked.get(sid, [])
        if statement.status == "tested" and sorted(statement.tests) != sorted(tests):
            problems.append(f"{sid}: manifest lists {statement.tests}, markers name {tests}")
        if statement.status != "tested" and tests:
            problems.append(f"{sid} is {statement.status} but {tests} name it")
    assert not problems, f"{problems} (python3 conformance/report.py --sync updates the lists)"


def test_no_marker_names_a_specification_without_a_manifest() -> None:
    markers = {m.marker for m in MANIFESTS}
    orphans = {name: [t.id for t in TESTS.values() if name in t.marks]
               for name in report.MARKERS.values() if name not in markers}
    assert not any(orphans.values()), f"markers without a manifest: {orphans}"


def test_the_report_in_the_repository_is_current() -> None:
    current = report.REPORT.read_text(encoding="utf-8") if report.REPORT.exists() else ""
    assert current == report.generate(), (
        "docs/conformance.md is out of date: run python3 conformance/report.py")


def test_the_readme_quotes_the_mqtt_5_totals() -> None:
    five = next(m for m in MANIFESTS if m.stem == "mqtt-5.0")
    total, _, tested, na, _ = report._counts(five.statements)
    violated = len({v[0] for v in report._violations(five, TESTS)})
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    expected = (f"MQTT 5.0: {tested} of {total} statements tested directly over sockets, "
                f"{violated} of them with a known violation")
    assert expected in readme, f"README.md should say: {expected!r}"
    assert f"{na} not applicable" in readme
