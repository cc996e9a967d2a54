"""Watchdog configuration and heartbeats (sending over a real HTTP peer is in
tests/integration/ops/test_watchdog.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from pipeline.alerting.config import load_config
from pipeline.errors import ConfigError
from pipeline.ops.watchdog import Watchdog


def test_watchdog_key_is_loaded(tmp_path: Path) -> None:
    path = tmp_path / "channels.yaml"
    path.write_text(
        "channels:\n  deadman:\n    url_env: DEADMAN_URL\nwatchdog:\n  channel: deadman\n"
        "  interval: 30s\n",
        encoding="utf-8",
    )
    spec = load_config(path).spec.watchdog
    assert spec is not None
    assert (spec.channel, spec.interval) == ("deadman", timedelta(seconds=30))


def test_watchdog_to_an_unknown_channel_is_refused_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "channels.yaml"
    path.write_text(
        "channels:\n  deadman:\n    url_env: DEADMAN_URL\nwatchdog:\n  channel: nope\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}:5: watchdog.channel: unknown channel 'nope'; known channels are console, deadman"
    )


class _Notifier:
    """Records what the watchdog asks to send (the real notifier is exercised end to end)."""

    def __init__(self) -> None:
        self.sent: list[object] = []

    async def send(self, notification: object) -> object:
        self.sent.append(notification)
        return notification


async def test_no_heartbeat_unless_owning_and_ready() -> None:
    notifier = _Notifier()
    state = {"ok": False}
    dog = Watchdog(notifier, "deadman", 60, "sw", lambda: state["ok"])  # type: ignore[arg-type]
    assert await dog.beat() is False
    assert notifier.sent == [] and dog.skipped == 1
    state["ok"] = True
    assert await dog.beat() is True
    assert dog.sent == 1


def test_heartbeat_ids_change_per_interval() -> None:
    dog = Watchdog(_Notifier(), "deadman", 60, "sw", lambda: True)  # type: ignore[arg-type]
    first, same, next_ = dog.heartbeat(60_000), dog.heartbeat(119_999), dog.heartbeat(120_000)
    assert first.id == same.id == "watchdog-sw-1"
    assert next_.id == "watchdog-sw-2"
    assert first.channel == "deadman" and first.alerts == ()
