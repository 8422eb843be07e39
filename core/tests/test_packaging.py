"""The distributions of the repository agree with each other (source-level checks; the
built wheels are checked by .ci/wheels and packaging/smoke).

The rule: one version for all of them, set with tools/set_version.py; every plugin pins
midge at that version; midge's extras name every bundled plugin at that version.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import set_version  # noqa: E402

from midge import __version__  # noqa: E402


def test_every_distribution_has_the_same_version() -> None:
    for dist in set_version.distributions():
        text = set_version.version_file(dist).read_text()
        match = set_version.VERSION_LINE.search(text)
        assert match is not None, dist
        assert match.group(0) == f'__version__ = "{__version__}"', dist


def test_every_pin_between_distributions_is_the_same_version() -> None:
    for dist in set_version.distributions():
        project = tomllib.loads((dist / "pyproject.toml").read_text())["project"]
        requirements = list(project.get("dependencies", []))
        for extra in project.get("optional-dependencies", {}).values():
            requirements += extra
        for requirement in requirements:
            if requirement.startswith("midge"):
                assert re.fullmatch(rf"midge[a-z-]*=={re.escape(__version__)}", requirement), (
                    dist, requirement)


def test_the_all_extra_names_every_bundled_plugin() -> None:
    core = tomllib.loads((ROOT / "core" / "pyproject.toml").read_text())["project"]
    names = {re.sub(r"==.*", "", r) for r in core["optional-dependencies"]["all"]}
    bundled = {
        tomllib.loads((d / "pyproject.toml").read_text())["project"]["name"]
        for d in (ROOT / "plugins").iterdir() if (d / "pyproject.toml").exists()
    }
    assert names == bundled


def test_set_version_refuses_a_bad_version() -> None:
    assert set_version.main(["one"]) == 2
