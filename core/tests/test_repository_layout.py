"""The repository's test layout: ``python3 -m pytest`` from the root collects every suite.

The test directories have no ``__init__.py`` and pytest imports test modules by their
basename (the default ``prepend`` import mode, which lets a suite import its own helper
modules), so two test files with the same name in different suites would collide.
"""

from __future__ import annotations

import tomllib
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_suite_is_in_testpaths() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    testpaths = config["tool"]["pytest"]["ini_options"]["testpaths"]
    assert all((ROOT / path).is_dir() for path in testpaths), testpaths
    suites = [p for pattern in ("*/tests", "*/*/tests") for p in ROOT.glob(pattern)]
    assert ROOT / "core" / "tests" in suites
    for suite in suites:
        assert any(suite.is_relative_to(ROOT / path) for path in testpaths), (
            f"{suite.relative_to(ROOT)} is not under a testpath: {testpaths}"
        )


def test_test_module_names_are_unique() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    seen: dict[str, list[str]] = defaultdict(list)
    for path in config["tool"]["pytest"]["ini_options"]["testpaths"]:
        for module in (ROOT / path).rglob("*.py"):
            if "tests" in module.relative_to(ROOT).parts and module.name != "conftest.py":
                seen[module.name].append(str(module.relative_to(ROOT)))
    duplicates = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not duplicates, f"test modules that would collide: {duplicates}"
