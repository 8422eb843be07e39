"""Set one version on every distribution of the repository, in lockstep.

The rule: ``core/src/midge/_version.py`` is the version; this script writes it there and
into every other distribution (its ``__version__`` and its ``midge==`` pin, and the pins of
midge's extras), and ``core/tests/test_packaging.py`` fails when any of them disagree.

    python3 tools/set_version.py 0.2.0
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE_VERSION = ROOT / "core" / "src" / "midge" / "_version.py"
VERSION_LINE = re.compile(r'^__version__ = "[^"]+"$', re.MULTILINE)
PIN = re.compile(r'"(midge(?:-[a-z-]+)?)==[^"]+"')


def distributions() -> list[Path]:
    """The directory of every distribution: core, each plugin, each example package."""
    found = [ROOT / "core"]
    for pattern in ("plugins/*/pyproject.toml", "examples/*/pyproject.toml"):
        found += sorted(path.parent for path in ROOT.glob(pattern))
    return found


def version_file(dist: Path) -> Path:
    """The module whose ``__version__`` hatch reads for ``dist``."""
    text = (dist / "pyproject.toml").read_text()
    match = re.search(r'\[tool\.hatch\.version\]\s*path\s*=\s*"([^"]+)"', text)
    if match is None:
        raise SystemExit(f"{dist}/pyproject.toml has no [tool.hatch.version] path")
    return dist / match.group(1)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not re.fullmatch(r"\d+\.\d+\.\d+(?:[ab]\d+|rc\d+)?", argv[0]):
        sys.stderr.write("usage: set_version.py X.Y.Z\n")
        return 2
    version = argv[0]
    for dist in distributions():
        path = version_file(dist)
        path.write_text(VERSION_LINE.sub(f'__version__ = "{version}"', path.read_text()))
        project = dist / "pyproject.toml"
        project.write_text(PIN.sub(rf'"\1=={version}"', project.read_text()))
    sys.stderr.write(f"every distribution is now at {version}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
