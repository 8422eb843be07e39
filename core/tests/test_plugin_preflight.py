"""The pre-flight check (``midge plugins -c FILE``) and the errors a bad plugin gets.

Each broken kind of plugin a new author writes (a bad table, a misspelt hook, ``async
def`` where a plain function is required, an argument the hook does not have, a
constructor that raises, a misspelt secret form, a plugin that is not installed) is
installed for real, as a distribution with a ``midge.plugins`` entry point on the
subprocess's path, and checked as a user would: exit status 2, the plugin's name and the
cause, no traceback. The same plugins given to ``Broker`` or ``midge_broker_factory``
raise ``midge.PluginError`` naming them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import midge
from midge import Broker, ListenerSettings, PluginError, Settings, hookimpl
from midge.hooks import check_plugin

SRC = Path(midge.__file__).resolve().parents[1]

PLUGINS = '''
from midge import PluginConfigError, hookimpl


class Good:
    def __init__(self, config):
        self.config = config

    @hookimpl
    def on_connect_authenticate(self, client, packet):
        return True


class BadTable:
    def __init__(self, config):
        for key in config:
            if key != "quota":
                raise PluginConfigError(key, "unknown key; allowed: quota")


class Typo:
    def __init__(self, config):
        pass

    @hookimpl
    def on_publised(self, client, packet):
        pass


class AsyncAcl:
    def __init__(self, config):
        pass

    @hookimpl
    async def on_acl_check(self, client, topic, write):
        return True


class BadArgument:
    def __init__(self, config):
        pass

    @hookimpl
    def on_published(self, client, pkt):
        pass


class Boom:
    def __init__(self, config):
        raise RuntimeError("database unreachable")


class Secretive:
    def __init__(self, config):
        self.password = config["password"]

    @hookimpl
    def on_connect(self, client, packet):
        pass


class Unmarked:
    def __init__(self, config):
        pass

    def on_published(self, client, packet):
        pass


class Many:
    def __init__(self, config):
        pass

    @hookimpl
    def on_publised(self, client, packet):
        pass

    @hookimpl
    async def on_acl_check(self, client, topic, write):
        return True
'''

ENTRY_POINTS = {
    "pf_good": "Good", "pf_table": "BadTable", "pf_typo": "Typo",
    "pf_async_acl": "AsyncAcl", "pf_argument": "BadArgument", "pf_boom": "Boom",
    "pf_secret": "Secretive", "pf_unmarked": "Unmarked", "pf_many": "Many",
}
#: an entry point whose module cannot be imported
MISSING = "pf_missing = midge_preflight_not_there:Thing"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding an installed distribution, midge-preflight-fixtures, whose
    entry points are the plugins above (importlib.metadata finds its .dist-info)."""
    root = tmp_path_factory.mktemp("site")
    (root / "midge_preflight_fixtures.py").write_text(PLUGINS)
    info = root / "midge_preflight_fixtures-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: midge-preflight-fixtures\nVersion: 1.0\n"
    )
    lines = ["[midge.plugins]"] + [
        f"{name} = midge_preflight_fixtures:{target}" for name, target in ENTRY_POINTS.items()
    ] + [MISSING]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return root


def run(site: Path, *args: str, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, **(env or {})}
    environ["PYTHONPATH"] = os.pathsep.join(
        [str(site), str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    return subprocess.run([sys.executable, "-m", "midge", *args], capture_output=True,
                          text=True, timeout=60, env=environ)


def block(out: str, name: str) -> str:
    """The lines ``midge plugins`` prints for one plugin."""
    lines = out.split(f"\n{name}\n", 1)[1].splitlines()
    return "\n".join(line for line in _indented(lines))


def _indented(lines: list[str]) -> list[str]:
    taken = []
    for line in lines:
        if not line.startswith("  "):
            break
        taken.append(line)
    return taken


def config(tmp_path: Path, tables: str) -> Path:
    path = tmp_path / "midge.toml"
    path.write_text('[[listeners]]\nport = 0\n\n' + textwrap.dedent(tables))
    return path


CASES = [
    ("pf_table", "quotaa = 3\n",
     "configuration: plugins.pf_table.quotaa: unknown key; allowed: quota"),
    ("pf_typo", "", "unknown hook 'on_publised' (did you mean 'on_published'?)"),
    ("pf_async_acl", "", "on_acl_check must be a plain function, not async def"),
    ("pf_argument", "",
     "on_published(client, pkt): argument 'pkt' is not among the hook's arguments "
     "(client, packet)"),
    ("pf_boom", "", "failed to start: RuntimeError: database unreachable (raised at "),
    ("pf_secret", 'password = { envv = "MIDGE_PF_SECRET" }\n',
     "configuration: plugins.pf_secret.password: { envv = ... } is not a secret form; "
     "did you mean "
     '{ env = "NAME" }?'),
    ("pf_missing", "", "cannot load midge_preflight_not_there:Thing: ModuleNotFoundError: "
                       "No module named 'midge_preflight_not_there'"),
    ("pf_absent", "", "is not installed (installed plugins: "),
]


@pytest.mark.parametrize(("name", "table", "cause"), CASES, ids=[c[0] for c in CASES])
def test_preflight_names_the_plugin_and_the_cause(
    site: Path, tmp_path: Path, name: str, table: str, cause: str
) -> None:
    path = config(tmp_path, f"[plugins.pf_good]\n\n[plugins.{name}]\n{table}")
    result = run(site, "plugins", "-c", str(path))
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr + result.stdout
    assert f"midge: {path}: plugin {name!r}: {cause}" in result.stderr
    assert f"midge: {path}: 1 of 2 configured plugins cannot start" in result.stderr
    if name != "pf_absent":
        lines = block(result.stdout, name)
        assert "status:       active (#2), CANNOT START" in lines
        assert f"  error:        {cause}" in lines
    assert "status:       active (#1)\n" in block(result.stdout, "pf_good") + "\n"


@pytest.mark.parametrize(("name", "table", "cause"), CASES, ids=[c[0] for c in CASES])
def test_starting_the_broker_with_a_broken_plugin_exits_2_naming_it(
    site: Path, tmp_path: Path, name: str, table: str, cause: str
) -> None:
    path = config(tmp_path, f"[plugins.{name}]\n{table}")
    result = run(site, "-c", str(path))
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert f"midge: {path}: plugin {name!r}: {cause}" in result.stderr


def test_preflight_reports_every_problem_of_one_plugin(site: Path, tmp_path: Path) -> None:
    path = config(tmp_path, "[plugins.pf_many]\n")
    result = run(site, "plugins", "-c", str(path))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "plugin 'pf_many'" in line]
    assert len(errors) == 2
    assert "unknown hook 'on_publised'" in errors[1]
    assert "on_acl_check must be a plain function" in errors[0]


def test_preflight_reports_every_broken_plugin_of_a_file(site: Path, tmp_path: Path) -> None:
    path = config(tmp_path, "".join(f"[plugins.{name}]\n{table}\n" for name, table, _ in CASES))
    result = run(site, "plugins", "-c", str(path))
    assert result.returncode == 2
    for name, _table, cause in CASES:
        assert f"plugin {name!r}: {cause}" in result.stderr
    assert f"{len(CASES)} of {len(CASES)} configured plugins cannot start" in result.stderr


def test_preflight_of_a_good_file_exits_0_and_a_secret_is_resolved(
    site: Path, tmp_path: Path
) -> None:
    path = config(tmp_path, '[plugins.pf_secret]\npassword = { env = "MIDGE_PF_SECRET" }\n')
    result = run(site, "plugins", "-c", str(path), env={"MIDGE_PF_SECRET": "s3cret"})
    assert result.returncode == 0, result.stderr
    assert f"{path}: 1 configured plugins ready" in result.stdout
    # nothing authenticates: the operator is told what that means
    assert "every connection will be refused" in result.stdout
    missing = run(site, "plugins", "-c", str(path))
    assert missing.returncode == 2
    assert "plugins.pf_secret.password: environment variable 'MIDGE_PF_SECRET' is not set" \
        in missing.stderr


def test_preflight_warns_about_a_hook_method_without_hookimpl(
    site: Path, tmp_path: Path
) -> None:
    path = config(tmp_path, "[plugins.pf_good]\n\n[plugins.pf_unmarked]\n")
    result = run(site, "plugins", "-c", str(path))
    assert result.returncode == 0, result.stderr
    lines = block(result.stdout, "pf_unmarked")
    assert "warning:      on_published is not marked @hookimpl, so it is never called" in lines
    assert "warning:      implements no hook" in lines
    assert "every connection will be refused" not in result.stdout


# -- the same checks in process: Broker() and the pytest fixture --------------------------


class Typo:
    @hookimpl
    def on_publised(self, client: Any, packet: Any) -> None:
        pass


class BadArgument:
    @hookimpl
    def on_published(self, client: Any, pkt: Any) -> None:
        pass


class AsyncAcl:
    @hookimpl
    async def on_acl_check(self, client: Any, topic: str, write: bool) -> bool:
        return True


class Wrapper:
    @hookimpl(wrapper=True)
    def on_publish(self, client: Any, packet: Any) -> Any:
        return (yield)


class Concurrency:
    midge_concurrency = 0

    @hookimpl
    async def on_published(self, client: Any, packet: Any) -> None:
        pass


@pytest.mark.parametrize(("plugin", "cause"), [
    (Typo(), "unknown hook 'on_publised' (did you mean 'on_published'?)"),
    (BadArgument(), "on_published(client, pkt): argument 'pkt' is not among the hook's "
                    "arguments (client, packet); take any of them, by name"),
    (AsyncAcl(), "on_acl_check must be a plain function, not async def"),
    (Wrapper(), "on_publish: hook wrappers are not supported"),
    (Concurrency(), "midge_concurrency must be an integer of at least 1, not 0"),
    (Typo, "is the class Typo, not an instance of it: pass Typo(config)"),
])
def test_broker_raises_plugin_error_naming_the_plugin(plugin: Any, cause: str) -> None:
    settings = Settings(listeners=(ListenerSettings(port=0, allow_anonymous=True),))
    with pytest.raises(PluginError) as raised:
        Broker(settings, plugins=[("mine", plugin)])
    assert raised.value.plugin == "mine"
    assert str(raised.value).startswith(f"plugin 'mine': {cause}")
    assert "object at 0x" not in str(raised.value)


def test_midge_broker_factory_raises_midge_plugin_error(midge_broker_factory: Any) -> None:
    with pytest.raises(midge.PluginError, match=r"^plugin 'badargument-0': on_published"):
        midge_broker_factory(objects=[BadArgument()])
    with pytest.raises(midge.PluginError, match=r"^plugin 'typo': unknown hook"):
        midge_broker_factory(objects=[("typo", Typo())])


def test_check_plugin_accepts_a_subset_of_arguments_and_defaults() -> None:
    class Fine:
        @hookimpl
        def on_published(self, packet: Any, extra: int = 0) -> None:
            pass

        @hookimpl
        def on_client_expired(self) -> None:
            pass

    assert check_plugin(Fine()) == ([], [])
