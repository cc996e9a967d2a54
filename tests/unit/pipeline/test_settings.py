"""Group timeouts per kind of broker, and that both consumer groups of a worker use them."""

from __future__ import annotations

import pytest

from pipeline.agents.clients import stage_consumer
from pipeline.app import build_app
from pipeline.settings import (
    EMBEDDED_SESSION_TIMEOUT_S,
    KAFKA_SESSION_TIMEOUT_S,
    PipelineSettings,
)


@pytest.fixture(autouse=True)
def _no_inherited_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SESSION_TIMEOUT_S", "HEARTBEAT_INTERVAL_S", "KAFKA_EMBEDDED"):
        monkeypatch.delenv(f"STREAMWARDEN_{name}", raising=False)


def test_real_kafka_gets_the_least_session_timeout_a_broker_accepts_by_default() -> None:
    settings = PipelineSettings(kafka_bootstrap="kafka:9092")
    # group.min.session.timeout.ms defaults to 6000: less is refused with INVALID_SESSION_TIMEOUT.
    assert settings.effective_session_timeout_s == KAFKA_SESSION_TIMEOUT_S == 6.0
    assert settings.effective_heartbeat_interval_s == 1.5


def test_the_embedded_broker_gets_a_shorter_session_and_heartbeat() -> None:
    settings = PipelineSettings(kafka_bootstrap="127.0.0.1:1", kafka_embedded=True)
    assert settings.effective_session_timeout_s == EMBEDDED_SESSION_TIMEOUT_S
    assert EMBEDDED_SESSION_TIMEOUT_S < KAFKA_SESSION_TIMEOUT_S
    assert settings.effective_heartbeat_interval_s == EMBEDDED_SESSION_TIMEOUT_S / 4


@pytest.mark.parametrize("embedded", [False, True])
def test_set_values_win_on_either_broker(embedded: bool) -> None:
    settings = PipelineSettings(
        kafka_embedded=embedded, session_timeout_s=10.0, heartbeat_interval_s=2.0
    )
    assert (settings.effective_session_timeout_s, settings.effective_heartbeat_interval_s) == (
        10.0,
        2.0,
    )


def test_a_set_session_timeout_alone_scales_the_heartbeat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMWARDEN_SESSION_TIMEOUT_S", "8")
    settings = PipelineSettings()
    assert (settings.effective_session_timeout_s, settings.effective_heartbeat_interval_s) == (
        8.0,
        2.0,
    )


async def test_the_normalize_group_consumer_uses_the_effective_timeouts() -> None:
    settings = PipelineSettings(kafka_bootstrap="127.0.0.1:1", kafka_embedded=True)
    consumer = stage_consumer(settings, "g")
    try:
        assert consumer._session_timeout_ms == int(EMBEDDED_SESSION_TIMEOUT_S * 1000)
        assert consumer._heartbeat_interval_ms == int(EMBEDDED_SESSION_TIMEOUT_S * 1000 / 4)
    finally:
        await consumer.stop()  # never started: closes its client


def test_the_faust_group_uses_the_effective_timeouts() -> None:
    settings = PipelineSettings(kafka_bootstrap="127.0.0.1:1", kafka_embedded=True)
    conf = build_app(settings).conf
    assert conf.broker_session_timeout == EMBEDDED_SESSION_TIMEOUT_S
    assert conf.broker_heartbeat_interval == EMBEDDED_SESSION_TIMEOUT_S / 4
