"""The conformance matrix stays true: the manifests in conformance/ and the markers of the
tests agree with each other, every server-side statement is tested or says why not,
docs/conformance.md is what conformance/report.py generates, and the README quotes its
MQTT 5.0 totals."""

from __future__ import annotations

import ast
import importlib.util
import sys
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


def test_the_mqtt_5_manifest_is_there_and_complete() -> None:
    five = next((m for m in MANIFESTS if m.stem == "mqtt-5.0"), None)
    assert five is not None, "conformance/mqtt-5.0.toml is missing"
    assert (five.spec, five.source) == ("MQTT 5.0", "OASIS Standard, 7 March 2019")
    # appendix B of the standard: 247 statements in chapters 1 to 4, four in chapter 6
    assert len(five.statements) == 251
    tested = sum(s.status == "tested" for s in five.statements)
    assert tested > 174, f"only {tested} MQTT 5.0 statements are tested directly"


def test_manifests_and_markers_agree() -> None:
    assert report.problems(MANIFESTS, TESTS) == []


def test_the_report_in_the_repository_is_current() -> None:
    current = report.REPORT.read_text(encoding="utf-8") if report.REPORT.exists() else ""
    assert current == report.generate(), (
        "docs/conformance.md is out of date: run python3 conformance/report.py")


@pytest.mark.parametrize(("stem", "name"), [("mqtt-5.0", "MQTT 5.0"),
                                            ("mqtt-3.1.1", "MQTT 3.1.1")])
def test_the_readme_quotes_the_totals(stem: str, name: str) -> None:
    manifest = next(m for m in MANIFESTS if m.stem == stem)
    total, _, tested, na, _ = report._counts(manifest.statements)
    violated = len({v[0] for v in report._violations(manifest, TESTS)})
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    expected = (f"{name}: {tested} of {total} statements tested directly over sockets, "
                f"{violated} of them with a known violation")
    assert expected in readme, f"README.md should say: {expected!r}"
    assert f"{na} not applicable" in readme


# -- the checks themselves can fail -----------------------------------------------------------

BROKEN = '''
[meta]
spec = "MQTT 5.0"
source = "test"

[[statement]]
id = "MQTT-1.1.1-1"
section = "1.1.1"
binds = "server"
summary = "listed test does not exist"
status = "tested"
tests = ["core/tests/nowhere.py::test_gone"]
reason = ""

[[statement]]
id = "MQTT-1.1.1-2"
section = "1.1.1"
binds = "server"
summary = "tested, no tests"
status = "tested"
tests = []
reason = ""

[[statement]]
id = "MQTT-1.1.1-3"
section = "1.1.1"
binds = "both"
summary = "server side, no test, no reason"
status = "untestable-from-outside"
tests = []
reason = ""

[[statement]]
id = "MQTT-1.1.1-3"
section = "1.1.1"
binds = "client"
summary = "duplicated"
status = "not-applicable"
tests = []
reason = "binds only clients"

[[statement]]
id = "MQTT-1.1.1-4"
section = "1.1.1"
binds = "server"
summary = "list differs from the markers"
status = "tested"
tests = ["core/tests/x.py::test_a"]
reason = ""

[[statement]]
id = "MQTT-1.1.1-5"
section = "1.1.1"
binds = "nobody"
summary = "bad binds and status"
status = "done"
tests = []
reason = "x"
'''


def _fake_tests() -> dict[str, Any]:
    a = report.TestInfo("core/tests/x.py::test_a", Path("x.py"), 1,
                        {"mqtt5": ["MQTT-9.9.9-9"]})
    b = report.TestInfo("core/tests/x.py::test_b", Path("x.py"), 2,
                        {"mqtt5": ["MQTT-1.1.1-4"], "mqtt311": ["MQTT-3.1.0-1"]})
    return {a.id: a, b.id: b}


def test_every_kind_of_problem_is_found(tmp_path: Path) -> None:
    (tmp_path / "mqtt-5.0.toml").write_text(BROKEN, encoding="utf-8")
    found = "\n".join(report.problems(report.load_manifests(tmp_path), _fake_tests()))
    for expected in [
        "MQTT-1.1.1-1: lists core/tests/nowhere.py::test_gone, which does not exist",
        "MQTT-1.1.1-2: tested, but lists no test",
        "MQTT-1.1.1-3: untestable-from-outside without a reason",
        "MQTT-1.1.1-3: binds the server and has neither a test nor a reason",
        "MQTT-1.1.1-3: duplicated id",
        "MQTT-1.1.1-4 lists ['core/tests/x.py::test_a'], but the tests marked with it are "
        "['core/tests/x.py::test_b']",
        "name MQTT-9.9.9-9, which it does not have",
        "MQTT-1.1.1-5: binds 'nobody'",
        "MQTT-1.1.1-5: status 'done'",
        "@pytest.mark.mqtt311 is used by ['core/tests/x.py::test_b'] but has no manifest",
    ]:
        assert expected in found, f"not reported: {expected}\n{found}"


def test_markers_and_xfail_violations_are_read_from_the_source(tmp_path: Path) -> None:
    info = report.TestInfo("t", tmp_path, 1)
    source = (
        "import pytest\n"
        "@pytest.mark.mqtt5('MQTT-1.2.3-4', 'MQTT-1.2.3-5')\n"
        "@pytest.mark.xfail(strict=True, reason='midge violation: does X')\n"
        "def test_x(): pass\n"
    )
    function = ast.parse(source).body[1]
    assert isinstance(function, ast.FunctionDef)
    report._apply(info, function.decorator_list)
    assert info.marks == {"mqtt5": ["MQTT-1.2.3-4", "MQTT-1.2.3-5"]}
    assert info.violation == "midge violation: does X"
