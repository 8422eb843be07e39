"""Imports point one way: codec <- model <- hooks <- engine <- listeners <- shell <- entry points.

Read from the source with ``ast`` (typing-only imports included, so the typing graph is
the runtime graph): a module may import its own layer or lower ones, never higher; the
listeners see only the engine's façade, the ports and the configuration; only the entry
points import the broker; and no two modules import each other, however indirectly.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "midge"

#: layer of each top-level part of the package, lowest first
LAYERS: dict[str, int] = {
    "codec": 0,
    "_version": 1, "errors": 1, "config": 1, "stats": 1, "message": 1, "topics": 1,
    "session": 1, "api": 1, "logsafe": 1, "records": 1,
    "hooks": 2,
    "engine": 3,
    "listeners": 4,
    "inline": 5, "broker": 5, "observe": 5, "logs": 5, "systemd": 5, "persistence": 5,
    "storage_contract": 6,
    "cli": 6, "cli_plugins": 6, "testing": 6, "__main__": 6, "__init__": 6,
}
#: what a listener module may import, besides its own package: the engine's façade, the
#: ports and the configuration, and three model utilities (counters, log-safe fields, the
#: version the status page shows)
LISTENER_ALLOWED = {"midge.engine", "midge.api", "midge.config", "midge.stats",
                    "midge.logsafe", "midge._version"}
#: the only modules that may import the broker shell
BROKER_IMPORTERS = {"midge.cli", "midge.testing", "midge.storage_contract", "midge"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every midge module ``path`` imports, at run time or for typing."""
    name = module_name(path)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("midge"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("midge"):
                continue
            # `from . import specs` imports the module specs, not its package's façade
            submodules = {f"{target}.{alias.name}" for alias in node.names}
            submodules = {m for m in submodules if _is_module(m)}
            found |= submodules or {target}
    found.discard(name)
    return found


def _is_module(name: str) -> bool:
    path = SRC / name.replace(".", "/")
    return path.is_dir() or path.with_suffix(".py").exists()


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def layer(module: str) -> int:
    if module == "midge":
        return LAYERS["__init__"]
    part = module.split(".")[1]
    return LAYERS[part]


def test_every_module_has_a_layer() -> None:
    for name in MODULES:
        layer(name)  # KeyError names a part with no layer


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    mine = layer(module)
    upward = sorted(target for target in GRAPH[module] if layer(target) > mine)
    assert not upward, f"{module} (layer {mine}) imports upward: {upward}"


def test_codec_imports_nothing_else_of_midge() -> None:
    for name, targets in GRAPH.items():
        if name.startswith("midge.codec"):
            assert all(t.startswith("midge.codec") for t in targets), (name, targets)


def test_listeners_see_only_the_engine_facade_the_ports_and_the_config() -> None:
    for name, targets in GRAPH.items():
        if name.startswith("midge.listeners"):
            outside = {t for t in targets if not t.startswith("midge.listeners")}
            assert outside <= LISTENER_ALLOWED, (name, outside - LISTENER_ALLOWED)


def test_only_the_entry_points_import_the_broker() -> None:
    importers = {name for name, targets in GRAPH.items() if "midge.broker" in targets}
    assert importers <= BROKER_IMPORTERS, importers - BROKER_IMPORTERS


def test_the_engine_imports_no_shell() -> None:
    for name, targets in GRAPH.items():
        if name.startswith("midge.engine"):
            shell = {t for t in targets
                     if t.split(".")[1] in ("broker", "listeners", "inline", "cli", "testing")}
            assert not shell, (name, shell)


def test_there_is_no_import_cycle() -> None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(GRAPH.get(node, ())):
            if target not in MODULES:
                continue
            if state.get(target) == 1:
                cycle = [*stack[stack.index(target):], target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for name in sorted(MODULES):
        if name not in state:
            visit(name)


def test_the_checks_can_fail() -> None:
    # the reader must see an upward import, or the tests above prove nothing
    assert "midge.engine" in GRAPH["midge.broker"]
    assert "midge.hooks" in GRAPH["midge.engine._engine"] or any(
        t.startswith("midge.hooks") for t in GRAPH["midge.engine._ask"]
    )
    assert layer("midge.broker") > layer("midge.engine._router")
