"""The conformance matrix: the manifests of normative statements, the tests that name them,
and the generated report.

    python3 conformance/report.py          # write docs/conformance.md
    python3 conformance/report.py --check  # exit 1 when docs/conformance.md is out of date
                                           # or manifests and markers disagree
    python3 conformance/report.py --sync   # first copy the tests' markers into the manifests

Standard library only. The manifests are ``conformance/mqtt-*.toml`` (one table per
statement, see mqtt-5.0.toml); the tests are found by reading the test files with ``ast``
(no pytest run): a test names the statements it checks with ``@pytest.mark.mqtt5(...)`` or
``@pytest.mark.mqtt311(...)``. A test marked ``xfail`` with a reason starting "midge
violation" records a statement midge does not meet yet.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "conformance"
CHOICES = MANIFESTS / "choices.toml"
REPORT = ROOT / "docs" / "conformance.md"
#: where tests that carry statement markers live
TEST_ROOTS = (ROOT / "core" / "tests",)
#: manifest file stem -> the pytest marker its tests use
MARKERS = {"mqtt-5.0": "mqtt5", "mqtt-3.1.1": "mqtt311"}
STATUSES = ("tested", "not-applicable", "untestable-from-outside")
BINDS = ("server", "client", "both")
#: MQTT-x.y.z-n; lenient, as the 3.1.1 text has a few tags such as MQTT-3-8.3-4
ID_PATTERN = re.compile(r"^MQTT-[0-9][0-9.-]*[0-9]$")
VIOLATION = "midge violation"

#: chapter and section titles shared by both specifications (3.1.1 has no AUTH, 2.3 is its
#: packet identifier section)
TITLES = {
    "1": "Introduction", "1.5": "Data representation",
    "2": "MQTT Control Packet format", "2.1": "Structure of a control packet",
    "2.2": "Variable header", "2.3": "Variable header", "2.4": "Payload",
    "3": "MQTT Control Packets", "3.1": "CONNECT", "3.2": "CONNACK", "3.3": "PUBLISH",
    "3.4": "PUBACK", "3.5": "PUBREC", "3.6": "PUBREL", "3.7": "PUBCOMP",
    "3.8": "SUBSCRIBE", "3.9": "SUBACK", "3.10": "UNSUBSCRIBE", "3.11": "UNSUBACK",
    "3.12": "PINGREQ", "3.13": "PINGRESP", "3.14": "DISCONNECT", "3.15": "AUTH",
    "4": "Operational behavior", "4.1": "Session state", "4.2": "Network connections",
    "4.3": "Quality of Service levels and protocol flows", "4.4": "Message delivery retry",
    "4.5": "Message receipt", "4.6": "Message ordering", "4.7": "Topic names and filters",
    "4.8": "Subscriptions", "4.9": "Flow control", "4.12": "Enhanced authentication",
    "4.13": "Handling errors", "5": "Security", "6": "WebSocket transport",
    "7": "Conformance",
}


@dataclass
class Statement:
    id: str
    section: str
    binds: str
    summary: str
    status: str
    tests: list[str]
    reason: str

    @property
    def server_side(self) -> bool:
        return self.binds in ("server", "both")

    @property
    def group(self) -> str:
        """The section the report files it under: 3.3.1.3 -> 3.3, 6.0 -> 6."""
        parts = self.section.split(".")
        if len(parts) == 1 or parts[1] == "0":
            return parts[0]
        return ".".join(parts[:2])


@dataclass
class Manifest:
    path: Path
    spec: str
    source: str
    marker: str
    statements: list[Statement]

    @property
    def stem(self) -> str:
        return self.path.stem


@dataclass
class TestInfo:
    """A test function found in a test file."""

    id: str
    path: Path
    line: int
    marks: dict[str, list[str]] = field(default_factory=dict)
    #: the reason of an ``xfail`` mark naming a midge violation, else ""
    violation: str = ""


# -- reading -------------------------------------------------------------------------------


def load_manifests(directory: Path = MANIFESTS) -> list[Manifest]:
    """Every ``mqtt-*.toml`` manifest, 5.0 first; a missing one is simply absent."""
    out = []
    for path in sorted(directory.glob("mqtt-*.toml"), key=lambda p: p.stem != "mqtt-5.0"):
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        meta = data.get("meta", {})
        statements = [
            Statement(
                id=str(entry.get("id", "")), section=str(entry.get("section", "")),
                binds=str(entry.get("binds", "")), summary=str(entry.get("summary", "")),
                status=str(entry.get("status", "")), tests=list(entry.get("tests", [])),
                reason=str(entry.get("reason", "")),
            )
            for entry in data.get("statement", [])
        ]
        out.append(Manifest(path, str(meta.get("spec", path.stem)), str(meta.get("source", "")),
                            MARKERS.get(path.stem, path.stem.replace("-", "").replace(".", "")),
                            statements))
    return out


def _test_files() -> Iterator[Path]:
    for root in TEST_ROOTS:
        yield from sorted(root.rglob("test_*.py"))


def _mark(decorator: ast.expr) -> tuple[str, ast.Call | None] | None:
    """``pytest.mark.NAME(...)`` or ``pytest.mark.NAME`` -> (NAME, the call or None)."""
    call = decorator if isinstance(decorator, ast.Call) else None
    target = call.func if call is not None else decorator
    if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Attribute)
            and target.value.attr == "mark"):
        return target.attr, call
    return None


def _strings(call: ast.Call | None) -> list[str]:
    if call is None:
        return []
    return [arg.value for arg in call.args
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]


def _xfail_reason(call: ast.Call | None) -> str:
    if call is None:
        return ""
    for keyword in call.keywords:
        if (keyword.arg == "reason" and isinstance(keyword.value, ast.Constant)
                and isinstance(keyword.value.value, str)):
            return keyword.value.value
    return ""


def _apply(info: TestInfo, decorators: list[ast.expr]) -> None:
    for decorator in decorators:
        found = _mark(decorator)
        if found is None:
            continue
        name, call = found
        if name == "xfail":
            reason = _xfail_reason(call)
            if reason.startswith(VIOLATION):
                info.violation = reason
        else:
            info.marks.setdefault(name, []).extend(_strings(call))


def _module_marks(tree: ast.Module) -> list[ast.expr]:
    """The decorators a module-level ``pytestmark = ...`` applies to every test."""
    for node in tree.body:
        if (isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)):
            value = node.value
            return list(value.elts) if isinstance(value, ast.List | ast.Tuple) else [value]
    return []


def collect_tests() -> dict[str, TestInfo]:
    """Every test function in the test roots, by pytest node id (parameters left out)."""
    tests: dict[str, TestInfo] = {}
    for path in _test_files():
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        module_marks = _module_marks(tree)
        for node in tree.body:
            scopes: list[tuple[str, list[ast.expr], ast.AST]] = []
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                scopes.append(("", [], node))
            elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                scopes.extend((node.name + "::", node.decorator_list, item)
                              for item in node.body)
            for prefix, class_marks, item in scopes:
                if not isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                if not item.name.startswith("test"):
                    continue
                info = TestInfo(f"{rel}::{prefix}{item.name}", path, item.lineno)
                _apply(info, [*module_marks, *class_marks, *item.decorator_list])
                tests[info.id] = info
    return tests


def marked(tests: dict[str, TestInfo], marker: str) -> dict[str, list[str]]:
    """statement id -> the ids of the tests whose ``marker`` names it, in file order."""
    out: dict[str, list[str]] = {}
    for test in tests.values():
        for statement in dict.fromkeys(test.marks.get(marker, [])):
            out.setdefault(statement, []).append(test.id)
    return out


def load_choices(path: Path = CHOICES) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return list(tomllib.loads(path.read_text(encoding="utf-8")).get("choice", []))


# -- checking ------------------------------------------------------------------------------


def problems(manifests: list[Manifest], tests: dict[str, TestInfo]) -> list[str]:
    """Everything that makes the matrix untrue; empty when manifests and markers agree.

    A statement id is malformed or duplicated; an entry lacks a field or has an unknown
    ``binds``/``status``; not-applicable or untestable without a reason; a listed test does
    not exist; a tested statement lists no test; a server-side statement has neither tests
    nor a reason; a tested statement's list differs from the tests whose marker names it;
    a marker names a statement missing from its manifest, or a specification without one.
    """
    out: list[str] = []
    for manifest in manifests:
        name = manifest.path.name
        seen: set[str] = set()
        for st in manifest.statements:
            where = f"{name}: {st.id or '(no id)'}"
            if st.id in seen:
                out.append(f"{where}: duplicated id")
            seen.add(st.id)
            if not ID_PATTERN.match(st.id):
                out.append(f"{where}: malformed id")
            if st.binds not in BINDS:
                out.append(f"{where}: binds {st.binds!r} is not one of {BINDS}")
            if st.status not in STATUSES:
                out.append(f"{where}: status {st.status!r} is not one of {STATUSES}")
            if not st.section.strip() or not st.summary.strip():
                out.append(f"{where}: no section or summary")
            if st.status in ("not-applicable", "untestable-from-outside") and not st.reason.strip():
                out.append(f"{where}: {st.status} without a reason")
            for test_id in st.tests:
                if test_id not in tests:
                    out.append(f"{where}: lists {test_id}, which does not exist")
            if st.status == "tested" and not st.tests:
                out.append(f"{where}: tested, but lists no test")
            if st.server_side and not st.tests and not st.reason.strip():
                out.append(f"{where}: binds the server and has neither a test nor a reason")
        marks = marked(tests, manifest.marker)
        known = {st.id: st for st in manifest.statements}
        for statement_id, test_ids in marks.items():
            if statement_id not in known:
                out.append(f"{name}: {test_ids} name {statement_id}, which it does not have")
        for statement_id, st in known.items():
            test_ids = marks.get(statement_id, [])
            if st.status == "tested" and sorted(st.tests) != sorted(test_ids):
                out.append(f"{name}: {statement_id} lists {st.tests}, but the tests marked "
                           f"with it are {test_ids} (report.py --sync updates the list)")
            elif st.status != "tested" and test_ids:
                out.append(f"{name}: {statement_id} is {st.status}, but {test_ids} name it")
    present = {m.marker for m in manifests}
    for marker in sorted(set(MARKERS.values()) - present):
        orphans = [t.id for t in tests.values() if marker in t.marks]
        if orphans:
            out.append(f"@pytest.mark.{marker} is used by {orphans} but has no manifest")
    return out


# -- writing -------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _link(test_id: str, tests: dict[str, TestInfo]) -> str:
    path, _, name = test_id.partition("::")
    info = tests.get(test_id)
    anchor = f"#L{info.line}" if info else ""
    return f"[`{name or path}`](../{path}{anchor})"


def _section_key(section: str) -> tuple[int, ...]:
    return tuple(int(part) for part in section.split(".") if part.isdigit())


def _counts(statements: list[Statement]) -> tuple[int, int, int, int, int]:
    return (len(statements), sum(s.server_side for s in statements),
            sum(s.status == "tested" for s in statements),
            sum(s.status == "not-applicable" for s in statements),
            sum(s.status == "untestable-from-outside" for s in statements))


def _violations(manifest: Manifest, tests: dict[str, TestInfo]) -> list[tuple[str, str, str]]:
    out = []
    for statement in manifest.statements:
        for test_id in statement.tests:
            info = tests.get(test_id)
            if info is not None and info.violation:
                out.append((statement.id, test_id, info.violation))
    return out


def render(manifests: list[Manifest], tests: dict[str, TestInfo],
           choices: list[dict[str, Any]]) -> str:
    lines = [
        "# Conformance matrix",
        "",
        "Every normative statement (`[MQTT-x.x.x-y]`) of the MQTT specifications midge",
        "implements, who it binds, and the tests that check it over real sockets. Generated by",
        "`python3 conformance/report.py` from the manifests in `conformance/` and the",
        "`@pytest.mark.mqtt5` / `@pytest.mark.mqtt311` markers of the tests; do not edit by",
        "hand. `core/tests/test_conformance_manifest.py` fails when this file is out of date.",
        "",
        "Statuses: **tested** (at least one test names the statement), **not-applicable** (it",
        "binds only clients or a transport midge does not have), **untestable-from-outside**",
        "(it cannot be observed over a socket; the reason says what covers it instead). A",
        "*violation* is a tested statement whose test is a strict `xfail`: midge does not meet",
        "it yet, and the test turns red the day it does.",
        "",
        "## Totals",
        "",
        "| Specification | Statements | Server side | Tested | Violations | Not applicable "
        "| Untestable | Server side without test or reason |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for manifest in manifests:
        total, server, tested, na, untestable = _counts(manifest.statements)
        violated = len({v[0] for v in _violations(manifest, tests)})
        missing = sum(1 for s in manifest.statements if s.server_side
                      and not s.tests and not s.reason)
        lines.append(f"| {manifest.spec} ({manifest.source}) | {total} | {server} | {tested} | "
                     f"{violated} | {na} | {untestable} | {missing} |")
    if not any(m.marker == "mqtt311" for m in manifests):
        lines.append("| MQTT 3.1.1 | manifest not written yet | | | | | | |")
    lines.append("")
    for manifest in manifests:
        violations = _violations(manifest, tests)
        lines += [f"## {manifest.spec}", "", f"Manifest: [`conformance/{manifest.path.name}`]"
                  f"(../conformance/{manifest.path.name}). Source: {manifest.source}.", ""]
        if violations:
            lines += ["### Known violations", "", "| Statement | Test | What midge does |",
                      "| --- | --- | --- |"]
            for statement_id, test_id, reason in violations:
                text = reason[len(VIOLATION):].lstrip(": ")
                lines.append(f"| {statement_id} | {_link(test_id, tests)} | {_cell(text)} |")
            lines.append("")
        groups: dict[str, list[Statement]] = {}
        for statement in manifest.statements:
            groups.setdefault(statement.group, []).append(statement)
        lines += ["### By section", "", "| Section | Statements | Server side | Tested "
                  "| Not applicable | Untestable |", "| --- | --- | --- | --- | --- | --- |"]
        ordered = sorted(groups, key=_section_key)
        for group in ordered:
            total, server, tested, na, untestable = _counts(groups[group])
            title = TITLES.get(group, "")
            lines.append(f"| {group} {title} | {total} | {server} | {tested} | {na} | "
                         f"{untestable} |")
        lines.append("")
        for group in ordered:
            lines += [f"### {group} {TITLES.get(group, '')}".rstrip(), "",
                      "| Statement | Section | Binds | Requirement (paraphrased) | Status "
                      "| Tests or reason |", "| --- | --- | --- | --- | --- | --- |"]
            for st in groups[group]:
                status = st.status
                if any(tests.get(t) and tests[t].violation for t in st.tests):
                    status += " (violation)"
                cover = ", ".join(_link(t, tests) for t in st.tests)
                if st.reason:
                    cover = f"{_cell(st.reason)}{'; ' + cover if cover else ''}"
                lines.append(f"| {st.id} | {st.section} | {st.binds} | {_cell(st.summary)} | "
                             f"{status} | {cover} |")
            lines.append("")
    lines += ["## SHOULD and MAY choices", "",
              "Where the specifications leave the server a choice (SHOULD, MAY, or a limit it",
              "sets), what midge does and why. The settings are in the README's configuration",
              "reference.", "", "| Topic | Statements | midge's choice | Why |",
              "| --- | --- | --- | --- |"]
    for choice in choices:
        lines.append(f"| {_cell(str(choice.get('topic', '')))} | "
                     f"{_cell(', '.join(choice.get('statements', [])))} | "
                     f"{_cell(str(choice.get('choice', '')))} | "
                     f"{_cell(str(choice.get('why', '')))} |")
    lines.append("")
    return "\n".join(lines)


def sync(manifest: Manifest, tests: dict[str, TestInfo]) -> list[str]:
    """Rewrite the one-line ``tests = [...]`` of each statement in ``manifest``'s file from
    the markers; a statement a marker names becomes ``tested``. Returns what changed.

    Statements written with a multi-line ``tests`` array are left alone (and reported).
    A ``tested`` statement no marker names any more keeps its list, so that the manifest
    test points at it and a person decides its new status.
    """
    marks = marked(tests, manifest.marker)
    lines = manifest.path.read_text(encoding="utf-8").splitlines(keepends=True)
    changes: list[str] = []
    current = ""
    status_line = -1
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped == "[[statement]]":
            current, status_line = "", -1
        elif stripped.startswith("id = "):
            current = tomllib.loads(stripped)["id"]
        elif stripped.startswith("status = "):
            status_line = index
        elif stripped.startswith("tests = ") and current in marks:
            if not stripped.endswith("]"):
                changes.append(f"{current}: multi-line tests array left alone")
                continue
            listed = tomllib.loads(stripped)["tests"]
            wanted = marks[current]
            if sorted(listed) != sorted(wanted):
                lines[index] = "tests = [" + ", ".join(f'"{t}"' for t in wanted) + "]\n"
                changes.append(f"{current}: tests {listed} -> {wanted}")
            if status_line >= 0 and tomllib.loads(lines[status_line].strip())["status"] != (
                    "tested"):
                lines[status_line] = 'status = "tested"\n'
                changes.append(f"{current}: status -> tested")
    if changes:
        manifest.path.write_text("".join(lines), encoding="utf-8")
    return changes


def generate() -> str:
    return render(load_manifests(), collect_tests(), load_choices())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if docs/conformance.md differs from what would be written")
    parser.add_argument("--sync", action="store_true",
                        help="first update the manifests' test lists from the tests' markers")
    args = parser.parse_args(argv)
    if args.sync:
        tests = collect_tests()
        for manifest in load_manifests():
            for change in sync(manifest, tests):
                sys.stdout.write(f"{manifest.path.name}: {change}\n")
    text = generate()
    if args.check:
        found = problems(load_manifests(), collect_tests())
        for problem in found:
            sys.stderr.write(problem + "\n")
        current = REPORT.read_text(encoding="utf-8") if REPORT.exists() else ""
        if current != text:
            sys.stderr.write("docs/conformance.md is out of date: run "
                             "python3 conformance/report.py\n")
            return 1
        return 1 if found else 0
    REPORT.write_text(text, encoding="utf-8")
    sys.stdout.write(f"wrote {REPORT.relative_to(ROOT)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
