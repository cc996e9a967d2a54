"""Assemble and run the worker: rules and channels are validated first, then agents start.

Everything a user can get wrong (rules, channels, missing variables) is checked before the
worker connects to Kafka, and reported as plain lines, never a traceback. While running, the
worker watches its rules path and reloads valid edits without a restart (an invalid edit is
logged line by line and the last good rules keep running).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import faust
from faust.types import TP

from pipeline.agents.batch_times import BatchTimes
from pipeline.agents.evaluate import RuleRuntimes, make_evaluate_rules, wall_clock_ms
from pipeline.agents.normalize import NormalizeStage
from pipeline.agents.notify import NotificationStage, make_send_notifications
from pipeline.agents.progress import CatchUp
from pipeline.agents.upgrade import LegacyOffsets
from pipeline.alerting.config import AlertingConfig, load_config
from pipeline.alerting.stats import ChannelStats
from pipeline.app import build_app
from pipeline.errors import RuleError
from pipeline.notify.channels import Channel, load_channels_from
from pipeline.notify.reasons import pass_on_from
from pipeline.notify.sender import Notifier
from pipeline.notify.tools import build_dispatcher
from pipeline.ops.wiring import attach_ops
from pipeline.rules.engine import RuleEngine
from pipeline.rules.loader import load_rules
from pipeline.runtime.collector import tune_collector
from pipeline.runtime.tables import BatchedTable
from pipeline.settings import PipelineSettings
from pipeline.topics import (
    ALERT_STATE_TABLE,
    ALERTS_PARTITIONS,
    ALERTS_TOPIC,
    DEADLETTER_TOPIC,
    MEASUREMENTS_TOPIC,
    NOTIFY_LOG_TABLE,
    NOTIFY_STATE_TABLE,
    STATES_TOPIC,
    raw_topics,
)
from producers.logformat import apply_log_format
from producers.redact import install_secret_filter

logger = logging.getLogger(__name__)

RULES_POLL_S = 2.0
TIMER_S = 1.0


@dataclass
class WorkerConfig:
    """Everything validated before the worker starts."""

    engine: RuleEngine
    alerting: AlertingConfig
    channels: dict[str, Channel]


def load_worker_config(settings: PipelineSettings) -> WorkerConfig:
    """Load channels, then rules (rules name channels).

    Raises:
        ConfigError: channels file problems or missing variables. RuleError: rule problems.
    """
    alerting = load_config(settings.channels_file)
    channels = load_channels_from(alerting)
    rules = load_rules([settings.rules_path], known_channels=set(channels))
    return WorkerConfig(RuleEngine(rules), alerting, channels)


class RulesWatcher:
    """Reloads the rules when a file under the rules path changes (by mtime and size)."""

    def __init__(self, path: Path, known_channels: set[str]) -> None:
        self._path = path
        self._known = known_channels
        self._seen = self._fingerprint()

    def _fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        files = (
            [self._path]
            if self._path.is_file()
            else sorted(p for p in self._path.glob("*") if p.suffix in (".yaml", ".yml"))
        )
        out = []
        for file in files:
            try:
                stat = file.stat()
            except OSError:
                continue
            out.append((str(file), stat.st_mtime_ns, stat.st_size))
        return tuple(out)

    def changed_rules(self) -> list[Any] | None:
        """New rules if the files changed and are valid; None otherwise (errors are logged)."""
        now = self._fingerprint()
        if now == self._seen:
            return None
        self._seen = now
        try:
            rules = load_rules([self._path], known_channels=self._known)
        except RuleError as exc:
            for problem in exc.problems:
                logger.error("rules reload refused, keeping the running rules: %s", problem)
            return None
        return rules


COUNTERS = (
    "raw",
    "measurements",
    "canonical_messages",
    "evaluated",
    "transitions",
    "alerts",
    "notifications_sent",
    "notifications_failed",
    "deadlettered",
    "evaluate_failed",
    "dispatch_failed",
)
"""The names :attr:`WorkerParts.counters` counts (each from 0, per worker process):

- ``raw``: raw envelopes normalized; ``measurements``: canonical records they gave;
  ``canonical_messages``: canonical Kafka messages written (normalize stage);
- ``evaluated``: canonical records through the rule engine; ``transitions``: alert
  transitions written to ``alerts.v1`` (evaluate stage);
- ``alerts``: transitions dispatched; ``notifications_sent`` / ``notifications_failed``:
  deliveries that succeeded / failed permanently (notify stage);
- ``deadlettered``: records sent to ``deadletter.v1`` by any stage, of which
  ``evaluate_failed`` / ``dispatch_failed`` are records whose processing raised twice.
"""


@dataclass
class WorkerParts:
    """The assembled worker; tests reach into it, ``run_worker`` runs it.

    Attributes:
        counters: stage counts, see :data:`COUNTERS` (``/metrics`` reads them).
    """

    app: faust.App
    runtimes: RuleRuntimes
    stage: NotificationStage
    notifier: Notifier
    channels: dict[str, Channel]
    normalize: NormalizeStage
    catch_up: CatchUp
    counters: Counter[str] = field(default_factory=Counter)
    batch_times: BatchTimes = field(default_factory=BatchTimes)

    def readiness(self) -> dict[str, object]:
        """Per stage: partitions assigned, state recovered, caught up; cheap (no I/O).

        ``ready`` is true once every stage has its assignment and the evaluate stage's state
        is recovered (``/readyz``). ``caught_up`` is informational: a worker with a backlog is
        ready, it is working it off.
        """
        app = self.app
        recovery = cast(Any, app.tables).recovery
        recovered = bool(recovery.completed.is_set()) and not app.rebalancing
        owned = sorted(self.runtimes.owned)
        evaluate = {
            "partitions": owned,
            "recovered": recovered,
            "caught_up": sorted(set(owned) - self.catch_up.lagging),
        }
        normalize = {
            "assigned": self.normalize.assigned,
            "caught_up": self.normalize.caught_up,
        }
        notify = {
            "active": self.stage.active,
            "recovered": recovered,
            "pending": self.stage.pending(),
        }
        return {
            "ready": recovered and self.normalize.assigned,
            "normalize": normalize,
            "evaluate": evaluate,
            "notify": notify,
        }


def build_worker(settings: PipelineSettings, config: WorkerConfig) -> WorkerParts:
    """Create the faust app with its topics, tables, agents and timers."""
    app = build_app(settings)
    counters: Counter[str] = Counter()

    def topic(name: str, partitions: int) -> Any:
        return app.topic(name, partitions=partitions, key_type=bytes, value_type=bytes)

    def table(name: str, partitions: int, help_text: str) -> BatchedTable:
        made = BatchedTable(
            app=app,
            name=name,
            default=None,
            partitions=partitions,
            key_type=bytes,
            value_type=bytes,
            help=help_text,
            beacon=app.tables.beacon,
        )
        app.tables.add(made)
        return made

    # Declared on real Kafka; raw topics are consumed by the normalize stage, not by faust.
    raw = app.topic(*raw_topics(), key_type=bytes, value_type=bytes)
    measurements = topic(MEASUREMENTS_TOPIC, settings.partitions)
    states = topic(STATES_TOPIC, settings.partitions)
    canonical = app.topic(MEASUREMENTS_TOPIC, STATES_TOPIC, key_type=bytes, value_type=bytes)
    alerts = topic(ALERTS_TOPIC, ALERTS_PARTITIONS)
    deadletter = topic(DEADLETTER_TOPIC, settings.partitions)
    rule_table = table(ALERT_STATE_TABLE, settings.partitions, "rule state per partition")
    notify_state = table(NOTIFY_STATE_TABLE, ALERTS_PARTITIONS, "dispatcher state")
    notify_log = table(NOTIFY_LOG_TABLE, ALERTS_PARTITIONS, "outbox and delivered marks")

    stats = ChannelStats()
    rules_by_name = {rule.name: rule for rule in config.engine.rules}
    notifier = Notifier(config.channels, alerts_out=settings.alerts_out, stats=stats)
    dispatcher = build_dispatcher(
        config.alerting, config.channels, rule_lookup=rules_by_name.get, stats=stats
    )

    def producer() -> Any:
        return app.producer

    runtimes = RuleRuntimes(config.engine, rule_table, producer, counters)
    batch_times = BatchTimes()  # per stage batch durations, for /metrics
    normalize = NormalizeStage(settings, counters, batch_times)
    catch_up = CatchUp(
        lambda p: runtimes.progress.caught_up(app.consumer, p),
        upstream_caught_up=lambda: normalize.caught_up,
    )
    stage = NotificationStage(dispatcher, notifier, notify_state, notify_log, counters=counters)
    batch_max, within = settings.batch_max, settings.batch_within
    legacy = LegacyOffsets(settings.app_id, settings.kafka_bootstrap)

    async def before_seek(consumer: Any, assignment: set[Any]) -> None:
        await legacy.adopt(consumer, assignment)

    app.before_seek = before_seek

    app.agent(canonical, name="evaluate_rules")(
        make_evaluate_rules(
            runtimes, batch_max=batch_max, batch_within=within, batch_times=batch_times
        )
    )
    app.agent(alerts, name="send_notifications")(
        make_send_notifications(
            stage,
            producer,
            batch_max=batch_max,
            batch_within=within,
            counters=counters,
            batch_times=batch_times,
        )
    )

    @app.task  # type: ignore[untyped-decorator]
    async def run_normalize() -> None:
        """On real Kafka declare the topics no agent consumes or that only the stages write
        (the embedded broker has them already), then run the normalize stage."""
        if not settings.kafka_embedded:
            for declared in (raw, measurements, states, alerts, deadletter):
                await declared.maybe_declare()
        await normalize.run()

    async def _on_revoked(sender: Any, *_: Any, **__: Any) -> None:
        """Before partitions move: every state write acknowledged, no delivery running."""
        await runtimes.on_revoked()
        await stage.on_revoked()

    async def _on_rebalance_complete(sender: Any, *_: Any, **__: Any) -> None:
        """Recovery done (faust resumes the streams next): own what was assigned."""
        assignment = app.consumer.assignment()
        runtimes.recovered(tp.partition for tp in assignment if tp.topic == MEASUREMENTS_TOPIC)
        if TP(ALERTS_TOPIC, 0) in assignment:
            stage.activate()

    app.on_partitions_revoked.connect(_on_revoked)  # type: ignore[arg-type]
    app.on_rebalance_complete.connect(_on_rebalance_complete)  # type: ignore[arg-type]

    @app.timer(TIMER_S)  # type: ignore[untyped-decorator]
    async def advance_timers() -> None:
        """Fire time-driven rule and notification work."""
        if app.rebalancing:
            return
        clock = wall_clock_ms()
        lagging_before = catch_up.lagging
        await runtimes.advance(clock, catch_up.check(runtimes.owned))
        if catch_up.lagging != lagging_before:
            logger.info(
                "rule partitions following event time (backlog) partitions=%s",
                ",".join(map(str, sorted(catch_up.lagging))) or "none",
            )
        await stage.tick(clock)

    watcher = RulesWatcher(settings.rules_path, set(config.channels))

    @app.timer(RULES_POLL_S)  # type: ignore[untyped-decorator]
    async def reload_rules() -> None:
        rules = watcher.changed_rules()
        if rules is None:
            return
        runtimes.set_engine(runtimes.engine.reload(rules))
        rules_by_name.clear()
        rules_by_name.update({rule.name: rule for rule in rules})
        logger.info("rules reloaded count=%d", len(rules))

    @app.timer(3600.0)  # type: ignore[untyped-decorator]
    async def prune_delivered_marks() -> None:
        if stage.active:
            await stage.prune(wall_clock_ms())

    return WorkerParts(
        app=app,
        runtimes=runtimes,
        stage=stage,
        notifier=notifier,
        channels=config.channels,
        normalize=normalize,
        catch_up=catch_up,
        counters=counters,
        batch_times=batch_times,
    )


class _Worker(faust.Worker):
    """faust's worker, quiet (no spinner), with our secret filter on every log handler."""

    secrets: list[str] = []

    def on_setup_root_logger(self, _logger: logging.Logger, level: int) -> None:
        install_secret_filter(self.secrets)
        quiet_library_info(level)
        apply_log_format()  # one format (STREAMWARDEN_LOG_FORMAT) for faust, mode, aiokafka, ours


def quiet_library_info(level: int) -> None:
    """Below DEBUG, keep apprise's per-send INFO lines ("Notifying 1 service(s).", "Sent ...
    notification.") out of the log: the worker logs its deliveries itself (one line per run
    of sends), and at a hundred notifications a second formatting apprise's two extra lines
    per send cost a tenth of the worker's CPU (py-spy, ``benchmarks/README.md``). Its warnings
    and errors stay.

    Once the notifier captures apprise's DEBUG lines for its failure reasons
    (:func:`~pipeline.notify.reasons.capture_debug`), lowering the logger alone would starve
    that capture: :func:`~pipeline.notify.reasons.pass_on_from` keeps the logger at WARNING
    except while a retry wants DEBUG, and passes only WARNING and above to the handlers."""
    if level > logging.DEBUG and not pass_on_from(logging.WARNING):
        logging.getLogger("apprise").setLevel(logging.WARNING)


def run_worker(settings: PipelineSettings, config: WorkerConfig) -> None:
    """Run the worker until SIGINT/SIGTERM. Raises SystemExit like faust's worker."""
    parts = build_worker(settings, config)
    attach_ops(parts, settings, config.alerting)  # /metrics, /readyz, page, history, watchdog
    secrets = [c.url for c in config.channels.values()]
    install_secret_filter(secrets)
    # redirect_stdouts=False: the console channel prints to stdout, which must stay stdout.
    worker = _Worker(parts.app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    worker.spinner = None  # faust's terminal spinner writes cursor escapes even when quiet
    worker.secrets = secrets
    logger.info(
        "worker starting rules=%d channels=%s bootstrap=%s embedded=%s",
        len(config.engine.rules),
        ",".join(sorted(config.channels)),
        settings.kafka_bootstrap,
        settings.kafka_embedded,
    )
    tune_collector()  # after everything is built: see pipeline.runtime.collector
    try:
        worker.execute_from_commandline()
    finally:
        parts.notifier.close()
