"""The hook registry is complete: every hook in ``midge.hooks.specs.RULES`` has a docstring,
a ``## name`` section in docs/hooks.md whose signature line matches the hookspec, and a
test in core/tests/test_hooks_*.py that names it."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from midge.hooks import specs as hookspecs
from midge.hooks.specs import RULES

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "hooks.md"
TESTS = Path(__file__).resolve().parent
HOOKS = sorted(RULES)


def signature_line(name: str) -> str:
    """The hookspec's signature as docs/hooks.md writes it: ``def name(a: T) -> R``."""
    sig = inspect.signature(getattr(hookspecs, name))
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"def {name}({params}) -> {sig.return_annotation}"


def doc_sections() -> dict[str, str]:
    """``## heading`` -> the text up to the next ``##`` heading."""
    text = DOC.read_text(encoding="utf-8")
    parts = re.split(r"^## +(\S+) *$", text, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_the_registry_is_not_empty_and_matches_the_hookspecs() -> None:
    specs = {name for name, obj in vars(hookspecs).items()
             if callable(obj) and hasattr(obj, "midge_spec")}
    assert len(RULES) >= 30
    assert specs == set(RULES)


@pytest.mark.parametrize("name", HOOKS)
def test_every_hookspec_has_a_docstring(name: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, name))
    assert doc and len(doc) > 20, f"hookspec {name} has no real docstring"


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_has_a_section_with_its_exact_signature(name: str) -> None:
    sections = doc_sections()
    assert name in sections, f"docs/hooks.md has no '## {name}' section"
    body = sections[name]
    lines = [line.strip() for line in body.splitlines() if line.strip().startswith("def ")]
    assert lines, f"the '## {name}' section has no signature line"
    assert lines[0] == signature_line(name), (
        f"docs/hooks.md '## {name}' documents {lines[0]!r}; the hookspec is "
        f"{signature_line(name)!r}"
    )
    rule, may_be_async = RULES[name]
    assert "**Combination:** " + rule.split()[0] in body or (
        rule == hookspecs.STOP_ON_EXCEPTION and "first refusal stops" in body
    ), f"the '## {name}' section does not state its combination rule ({rule})"
    assert ("not allowed" in body) is (not may_be_async), (
        f"the '## {name}' section misstates whether it may be async def"
    )
    assert "@hookimpl" in body, f"the '## {name}' section has no example"


def _hookimpls(path: Path) -> set[str]:
    """Names of the functions a test module defines with ``@hookimpl``: hooks it really
    implements, as opposed to names in docstrings, comments or strings."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if (isinstance(target, ast.Name) and target.id == "hookimpl") or (
                        isinstance(target, ast.Attribute) and target.attr == "hookimpl"):
                    names.add(node.name)
    return names


HOOK_TESTS = sorted(path for path in TESTS.glob("test_hooks_*.py")
                    if path.name != Path(__file__).name)


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_is_implemented_in_a_hook_test(name: str) -> None:
    implemented = set().union(*(_hookimpls(path) for path in HOOK_TESTS))
    assert name in implemented, (
        f"no core/tests/test_hooks_*.py test implements {name} with @hookimpl"
    )


def test_hook_names_in_docstrings_do_not_count(tmp_path: Path) -> None:
    module = tmp_path / "test_hooks_fake.py"
    module.write_text(
        '"""Mentions on_publish and on_subscribe."""\n'
        "from midge import hookimpl\n\n"
        "class P:\n"
        '    """on_connect in a docstring"""\n\n'
        "    @hookimpl\n"
        "    def on_disconnect(self, client):\n"
        '        """on_will too"""\n'
        "        return 'on_will_sent'\n",
        encoding="utf-8",
    )
    assert _hookimpls(module) == {"on_disconnect"}
