"""The sans-I/O modules (codec, model, ports, hooks, engine) import no I/O library.

Each check runs in a fresh interpreter, so modules imported by other tests do not count.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

IO_MODULES = ("anyio", "asyncio", "socket", "ssl", "selectors", "trio", "uvloop")
SANS_IO = (
    "midge.codec", "midge.session", "midge.topics", "midge.message", "midge.api",
    "midge.hooks", "midge.engine",
)

_PROBE = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(",".join(m for m in {io!r} if m in sys.modules))
print(",".join(sorted(m for m in sys.modules if m.startswith("midge"))))
"""


def _imports(*modules: str) -> tuple[list[str], str]:
    """The I/O modules loaded after importing ``modules``, and the midge modules loaded."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(io=IO_MODULES), *modules],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    io_line, midge_line = result.stdout.splitlines()
    return [name for name in io_line.split(",") if name], midge_line


def test_probe_detects_io_imports() -> None:
    # the probe itself must be able to see an I/O import, or the tests below prove nothing
    assert _imports("socket")[0] == ["socket", "selectors"]


@pytest.mark.parametrize("module", SANS_IO)
def test_module_imports_no_io_library(module: str) -> None:
    io, loaded = _imports(module)
    assert io == [], f"importing {module} loaded {loaded}"


def test_all_sans_io_modules_together_import_no_io_library() -> None:
    io, loaded = _imports(*SANS_IO)
    assert io == [], f"importing {SANS_IO} loaded {loaded}"
