"""on_ready_check: what /readyz asks plugins, under the first-non-empty rule, sync or async,
bounded in time; the broker's own state (starting, shutting down) answers first."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from midge import Broker, ListenerSettings, Settings, hookimpl
from midge import observe as observe_module


def settings() -> Settings:
    return Settings(listeners=(ListenerSettings(port=0, allow_anonymous=True),))


class Answer:
    def __init__(self, reason: str | None, calls: list[str], name: str) -> None:
        self.reason = reason
        self.calls = calls
        self.name = name

    @hookimpl
    def on_ready_check(self, broker: Any) -> str | None:
        self.calls.append(self.name)
        return self.reason


class AsyncAnswer(Answer):
    @hookimpl
    async def on_ready_check(self, broker: Any) -> str | None:  # type: ignore[override]
        await anyio.sleep(0)
        self.calls.append(self.name)
        return self.reason


class Slow:
    @hookimpl
    async def on_ready_check(self, broker: Any) -> str | None:
        await anyio.sleep(30)
        return None


class Failing:
    @hookimpl
    def on_ready_check(self, broker: Any) -> str | None:
        raise RuntimeError("boom")


async def not_ready(plugins: list[tuple[str, Any]]) -> str | None:
    async with Broker(settings(), plugins=plugins) as broker:
        return await broker.observatory.not_ready()


def test_no_plugin_means_ready() -> None:
    assert anyio.run(not_ready, []) is None


def test_the_first_reason_wins_and_later_plugins_are_not_asked() -> None:
    calls: list[str] = []
    plugins = [("a", Answer(None, calls, "a")), ("b", AsyncAnswer("storage down", calls, "b")),
               ("c", Answer("other", calls, "c"))]
    assert anyio.run(not_ready, plugins) == "storage down"
    assert calls == ["a", "b"]


def test_all_ready_answers_none() -> None:
    calls: list[str] = []
    plugins = [("a", Answer(None, calls, "a")), ("b", AsyncAnswer(None, calls, "b"))]
    assert anyio.run(not_ready, plugins) is None
    assert calls == ["a", "b"]


def test_a_failing_check_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    plugins = [("bad", Failing()), ("b", Answer("disk full", calls, "b"))]
    assert anyio.run(not_ready, plugins) == "disk full"
    assert "plugin bad failed in on_ready_check" in caplog.text


def test_a_slow_check_counts_as_not_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observe_module, "READY_CHECK_TIMEOUT", 0.2)
    reason = anyio.run(not_ready, [("slow", Slow())])
    assert reason == "a readiness check took longer than 0.2 s"


def test_the_broker_is_not_ready_before_it_runs_and_while_it_stops() -> None:
    broker = Broker(settings())
    assert anyio.run(broker.observatory.not_ready) == "starting"

    seen: list[str | None] = []

    class Watcher:
        @hookimpl
        async def on_stopped(self, broker: Broker) -> None:
            seen.append(await broker.observatory.not_ready())

    async def run() -> str | None:
        async with Broker(settings(), plugins=[("w", Watcher())]) as running:
            return await running.observatory.not_ready()

    assert anyio.run(run) is None
    assert seen == ["shutting down"]
