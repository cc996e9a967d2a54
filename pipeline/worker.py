"""Assemble and run the worker: rules and channels are validated first, then agents start.

Everything a user can get wrong (rules, channels, missing variables) is checked before the
worker connects to Kafka, and reported as plain lines, never a traceback.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import faust

from pipeline.agents.evaluate import make_evaluate_rules
from pipeline.agents.normalize import make_normalize_raw
from pipeline.agents.notify import make_send_notifications
from pipeline.app import build_app
from pipeline.notify.channels import Channel, load_channels
from pipeline.notify.sender import Notifier
from pipeline.rules.engine import RuleEngine
from pipeline.rules.loader import load_rules
from pipeline.settings import PipelineSettings
from pipeline.topics import (
    ALERT_STATE_TABLE,
    ALERTS_TOPIC,
    DEADLETTER_TOPIC,
    MEASUREMENTS_TOPIC,
    STATES_TOPIC,
    raw_topics,
)
from producers.redact import install_secret_filter

logger = logging.getLogger(__name__)


@dataclass
class WorkerParts:
    """The assembled worker; tests reach into it, ``run_worker`` runs it."""

    app: faust.App
    engine: RuleEngine
    notifier: Notifier
    channels: dict[str, Channel]
    counters: Counter[str] = field(default_factory=Counter)

    def current_engine(self) -> RuleEngine:
        return self.engine


def load_config(settings: PipelineSettings) -> tuple[RuleEngine, dict[str, Channel]]:
    """Load channels then rules (rules name channels).

    Raises:
        ConfigError: channels file problems. RuleError: rule problems (all of them).
    """
    channels = load_channels(settings.channels_file)
    rules = load_rules([settings.rules_path], known_channels=set(channels))
    return RuleEngine(rules), channels


def build_worker(
    settings: PipelineSettings, engine: RuleEngine, channels: dict[str, Channel]
) -> WorkerParts:
    """Create the faust app with its topics, table and agents."""
    app = build_app(settings)
    notifier = Notifier(channels, alerts_out=settings.alerts_out)
    parts = WorkerParts(app=app, engine=engine, notifier=notifier, channels=channels)

    def topic(name: str) -> Any:
        return app.topic(name, partitions=settings.partitions, key_type=bytes, value_type=bytes)

    raw = app.topic(*raw_topics(), key_type=bytes, value_type=bytes)
    measurements = topic(MEASUREMENTS_TOPIC)
    states = topic(STATES_TOPIC)
    alerts = topic(ALERTS_TOPIC)
    deadletter = topic(DEADLETTER_TOPIC)
    table = app.Table(
        ALERT_STATE_TABLE,
        default=None,
        partitions=settings.partitions,
        key_type=bytes,
        value_type=bytes,
        help="alert fingerprint -> AlertState (msgpack)",
    )
    batch_max, within = settings.batch_max, settings.batch_within
    counters: dict[str, int] = parts.counters
    app.agent(raw, name="normalize_raw")(
        make_normalize_raw(
            measurements,
            states,
            deadletter,
            batch_max=batch_max,
            batch_within=within,
            counters=counters,
        )
    )
    app.agent(measurements, name="evaluate_rules")(
        make_evaluate_rules(
            parts.current_engine,
            table,
            alerts,
            deadletter,
            batch_max=batch_max,
            batch_within=within,
            counters=counters,
        )
    )
    app.agent(alerts, name="send_notifications")(
        make_send_notifications(
            notifier, deadletter, batch_max=batch_max, batch_within=within, counters=counters
        )
    )
    return parts


class _Worker(faust.Worker):
    """faust's worker, quiet (no spinner), with our secret filter on every log handler."""

    secrets: list[str] = []

    def on_setup_root_logger(self, _logger: logging.Logger, _level: int) -> None:
        install_secret_filter(self.secrets)


def run_worker(
    settings: PipelineSettings, engine: RuleEngine, channels: dict[str, Channel]
) -> None:
    """Run the worker until SIGINT/SIGTERM. Raises SystemExit like faust's worker."""
    parts = build_worker(settings, engine, channels)
    install_secret_filter([c.url for c in channels.values()])
    # redirect_stdouts=False: the console channel prints to stdout, which must stay stdout.
    worker = _Worker(parts.app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    worker.spinner = None  # faust's terminal spinner writes cursor escapes even when quiet
    worker.secrets = [c.url for c in channels.values()]
    logger.info(
        "worker starting rules=%d channels=%s bootstrap=%s embedded=%s",
        len(engine.rules),
        ",".join(sorted(channels)),
        settings.kafka_bootstrap,
        settings.kafka_embedded,
    )
    worker.execute_from_commandline()
