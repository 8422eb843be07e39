"""docs/writing-plugins.md is the code of examples/rate_limit, and its code runs.

Blocks marked ``<!-- file: PATH -->`` must equal that file, ``<!-- excerpt: PATH -->``
blocks must appear in it verbatim. Then the guide's own copy of the plugin is what runs:
its test excerpts, joined into a module, pass under pytest against a real broker; its
configuration passes ``midge plugins -c``; its background-work examples import neither
asyncio nor trio and work, on both, against a real broker (and a real HTTP server).
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest

import midge
from midge import Broker, BrokerSettings, ListenerSettings, PluginConfigError, Settings

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "writing-plugins.md"
SRC = Path(midge.__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- (file|excerpt|check): ([^>]+?) -->\n```(\w+)\n(.*?)```", re.DOTALL)


def blocks(kind: str) -> list[tuple[str, str]]:
    """(target, code) of every block of this kind, in guide order."""
    text = GUIDE.read_text(encoding="utf-8")
    return [(target, code) for k, target, _lang, code in BLOCK.findall(text) if k == kind]


def block(kind: str, target: str) -> str:
    [code] = [code for t, code in blocks(kind) if t == target]
    return code


def test_the_guide_marks_its_blocks() -> None:
    assert {t for t, _ in blocks("file")} == {
        "examples/rate_limit/pyproject.toml",
        "examples/rate_limit/src/midge_rate_limit/__init__.py",
    }
    assert len(blocks("excerpt")) >= 4
    assert {t for t, _ in blocks("check")} >= {
        "config", "module midge_guide_client_count", "module midge_guide_webhook",
    }


@pytest.mark.parametrize("target", [
    "examples/rate_limit/pyproject.toml", "examples/rate_limit/src/midge_rate_limit/__init__.py",
])
def test_file_blocks_are_the_example_files(target: str) -> None:
    assert block("file", target) == (ROOT / target).read_text(encoding="utf-8"), (
        f"docs/writing-plugins.md's copy of {target} differs from the file"
    )


def test_excerpts_are_verbatim() -> None:
    for target, code in blocks("excerpt"):
        assert code in (ROOT / target).read_text(encoding="utf-8"), (
            f"a docs/writing-plugins.md excerpt is not in {target}:\n{code}"
        )


@pytest.fixture(scope="module")
def guide_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The guide's plugin as an installed package (module and entry point) in a
    directory of its own, put first on the path of the processes that use it."""
    root = tmp_path_factory.mktemp("guide")
    package = root / "midge_rate_limit"
    package.mkdir()
    (package / "__init__.py").write_text(
        block("file", "examples/rate_limit/src/midge_rate_limit/__init__.py")
    )
    info = root / "midge_guide_rate_limit-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: midge-guide-rate-limit\nVersion: 0.1.0\n"
    )
    (info / "entry_points.txt").write_text(
        "[midge.plugins]\nrate_limit = midge_rate_limit:RateLimit\n"
    )
    return root


def _env(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(SRC)])}


def test_the_guide_tests_pass_against_the_guide_plugin(guide_site: Path, tmp_path: Path) -> None:
    module = "\n\n".join(code for _, code in blocks("excerpt"))
    (tmp_path / "test_guide_excerpts.py").write_text(module)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    probe = "import midge_rate_limit; print(midge_rate_limit.__file__)"
    where = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           env=_env(guide_site), timeout=30)
    assert where.stdout.strip() == str(guide_site / "midge_rate_limit" / "__init__.py")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c",
         str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path),
         str(tmp_path / "test_guide_excerpts.py")],
        capture_output=True, text=True, env=_env(guide_site), timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed and int(passed.group(1)) >= 8, result.stdout[-500:]


def test_the_guide_configuration_passes_the_preflight(guide_site: Path, tmp_path: Path) -> None:
    pytest.importorskip("midge_auth_allow")
    path = tmp_path / "midge.toml"
    path.write_text(block("check", "config"))
    result = subprocess.run([sys.executable, "-m", "midge", "plugins", "-c", str(path)],
                            capture_output=True, text=True, env=_env(guide_site), timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{path}: 2 configured plugins ready" in result.stdout
    broken = path.read_text().replace("burst = 20", "burst = 0")
    path.write_text(broken)
    result = subprocess.run([sys.executable, "-m", "midge", "plugins", "-c", str(path)],
                            capture_output=True, text=True, env=_env(guide_site), timeout=60)
    assert result.returncode == 2
    assert "plugin 'rate_limit': configuration: plugins.rate_limit.burst: must be an integer " \
        "of at least 1, not 0" in result.stderr


# -- background and concurrent work --------------------------------------------------------


def guide_module(name: str) -> types.ModuleType:
    code = block("check", f"module {name}")
    imported = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"asyncio", "trio"}, f"{name} imports {imported & {'asyncio', 'trio'}}"
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses and typing look modules up by name
    exec(compile(code, f"<docs/writing-plugins.md: {name}>", "exec"), module.__dict__)
    return module


def settings(**limits: Any) -> Settings:
    return Settings(broker=BrokerSettings(sys_interval=0, **limits),
                    listeners=(ListenerSettings(port=0, allow_anonymous=True),))


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_periodic_task_example_publishes_on_both_backends(backend: str) -> None:
    module = guide_module("midge_guide_client_count")
    with pytest.raises(PluginConfigError, match="interval"):
        module.ClientCount({"interval": 0})
    plugin = module.ClientCount({"interval": 0.1, "topic": "ops/clients"})

    async def main() -> list[bytes]:
        async with Broker(settings(), plugins=[("client_count", plugin)]) as broker:
            stream = await anyio.connect_tcp(*broker.addresses[0])
            from midge.codec import Connect, encode

            await stream.send(encode(Connect("counted"), 4))
            got = []
            async with broker.subscribe("ops/clients") as messages:
                with anyio.fail_after(5):
                    while b"1" not in got:
                        got.append((await messages.get()).payload)
            await stream.aclose()
            return got

    got = anyio.run(main, backend=backend)
    assert got[-1] == b"1" and set(got) <= {b"0", b"1"}


class Hook(BaseHTTPRequestHandler):
    """Records each POSTed JSON body; takes 0.1 s, counting how many run at once."""

    lock = threading.Lock()
    bodies: ClassVar[list[dict[str, Any]]] = []
    running = 0
    most = 0

    def do_POST(self) -> None:
        cls = type(self)
        with cls.lock:
            cls.running += 1
            cls.most = max(cls.most, cls.running)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(0.1)
        with cls.lock:
            cls.bodies.append(body)
            cls.running -= 1
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    Hook.bodies, Hook.running, Hook.most = [], 0, 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_webhook_example_posts_concurrently_on_both_backends(
    backend: str, http_server: str
) -> None:
    module = guide_module("midge_guide_webhook")
    with pytest.raises(PluginConfigError, match="url"):
        module.Webhook({"url": "ftp://x"})
    plugin = module.Webhook({"url": http_server, "prefix": "sensors/", "concurrency": 5})
    assert plugin.midge_concurrency == 5

    async def main() -> None:
        async with Broker(settings(), plugins=[("webhook", plugin)]) as broker:
            for index in range(20):
                await broker.publish(f"sensors/{index}", f"{index}")
            await broker.publish("other/topic", "not sent")
            with anyio.fail_after(10):
                while plugin.sent < 20:
                    await anyio.sleep(0.02)

    anyio.run(main, backend=backend)
    assert sorted(int(body["payload"]) for body in Hook.bodies) == list(range(20))
    assert {body["topic"] for body in Hook.bodies} == {f"sensors/{i}" for i in range(20)}
    assert Hook.most == 5  # five at once, never more
    assert plugin.failed == 0
