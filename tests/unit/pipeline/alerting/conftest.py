"""Helpers for driving the dispatcher with explicit times: alerts, configs, a harness."""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest

from pipeline.alerting.config import AlertingConfig, load_config
from pipeline.alerting.dispatch import Dispatcher
from pipeline.alerting.model import Notification, StateValue, decode_state, encode_state
from pipeline.alerting.silences import SilenceSource
from pipeline.alerting.stats import ChannelStats
from pipeline.alerting.templates import ChannelTemplates, Renderer
from pipeline.alerting.timers import TrackedState, run_due
from pipeline.models import AlertTransition


def alert(
    entity: str = "mp-1",
    state: str = "firing",
    ts_ms: int = 1_000,
    *,
    rule: str = "power-high",
    severity: str = "warning",
    labels: dict[str, str] | None = None,
    channels: tuple[str, ...] = ("console",),
    value: float | str = 42.5,
) -> AlertTransition:
    """An alert transition; the fingerprint is derived from rule and entity."""
    return AlertTransition(
        fingerprint=f"fp-{rule}-{entity}",
        rule=rule,
        state=state,  # type: ignore[arg-type]
        entity=entity,
        source="aliunid",
        stream="s",
        metric="sys.kW",
        value=value,
        severity=severity,
        ts_ms=ts_ms,
        summary=f"{entity} draws {value} kW",
        channels=channels,
        labels=labels if labels is not None else {"team": "energy"},
    )


class EncodedState(MutableMapping[str, StateValue]):
    """State kept as msgpack bytes, as the changelog table keeps it."""

    def __init__(self) -> None:
        self.raw: dict[str, bytes] = {}

    def __getitem__(self, key: str) -> StateValue:
        return decode_state(self.raw[key])

    def __setitem__(self, key: str, value: StateValue) -> None:
        self.raw[key] = encode_state(value)

    def __delitem__(self, key: str) -> None:
        del self.raw[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)


class Harness:
    """A dispatcher over encoded state with a deadline index; time only moves when told."""

    def __init__(
        self,
        config: AlertingConfig,
        *,
        silences: SilenceSource | None = None,
        formats: dict[str, ChannelTemplates] | None = None,
    ) -> None:
        self.stats = ChannelStats()
        self.state = TrackedState(EncodedState())
        self.dispatcher = Dispatcher(
            config, Renderer(formats or {}), silences=silences, stats=self.stats
        )
        self.sent: list[Notification] = []

    def fire(self, transition: AlertTransition, now_ms: int) -> list[Notification]:
        out = self.dispatcher.dispatch(self.state, transition, now_ms)
        self.sent += out
        return out

    def at(self, now_ms: int) -> list[Notification]:
        out = run_due(self.dispatcher, self.state, now_ms)
        self.sent += out
        return out

    def next_deadline(self) -> int | None:
        return self.state.index.next_deadline()


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], AlertingConfig]:
    def write(text: str) -> AlertingConfig:
        path = tmp_path / "channels.yaml"
        path.write_text(text, encoding="utf-8")
        return load_config(path)

    return write


@pytest.fixture
def harness(write_config: Callable[[str], AlertingConfig]) -> Callable[..., Harness]:
    def make(text: str = "", **kwargs: Any) -> Harness:
        return Harness(write_config(text), **kwargs)

    return make


@pytest.fixture
def make_alert() -> Callable[..., AlertTransition]:
    return alert
