"""Attach the ops server and the notification history to a built worker, in one call.

``attach_ops(parts, settings)`` is the worker's whole ops wiring (one hunk in
:mod:`pipeline.worker`): it reads the parts through providers, binds the notification
history to the faust producer once the app runs, and starts and stops the server with the
app (a faust task whose cancellation at shutdown stops it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, cast

from pipeline.alerting.silences import SilenceError, list_silences
from pipeline.ops.history import NOTIFICATIONS_TOPIC, HistoryWriter
from pipeline.ops.readiness import parts_readiness
from pipeline.ops.server import OpsServer
from pipeline.ops.sources import WorkerSources
from pipeline.ops.watchdog import Watchdog
from pipeline.rules.state import EngineState, StateFormatError, decode_state
from pipeline.runtime.producer import BatchingProducer
from pipeline.settings import PipelineSettings

__all__ = ["attach_ops", "sources_of"]

logger = logging.getLogger(__name__)

HISTORY_RETENTION = timedelta(days=14)
"""How long Kafka keeps ``notifications.v1`` (declared on real Kafka only)."""


def sources_of(parts: Any, silences_file: Any = None) -> WorkerSources:
    """Providers over the worker's parts (public attributes only)."""
    notifier = parts.notifier
    stage = parts.stage

    def silences() -> list[dict[str, Any]]:
        if silences_file is None:
            return []
        now = int(time.time() * 1000)
        try:
            found = list_silences(silences_file, now_ms=now)
        except SilenceError as exc:
            return [{"id": "", "matchers": [], "state": f"unreadable: {exc}"}]
        return [
            {
                "id": s.id,
                "matchers": list(s.matchers),
                "state": state,
                "starts_at_ms": s.starts_at_ms,
                "ends_at_ms": s.ends_at_ms,
                "comment": s.comment,
                "author": s.author,
            }
            for s, state in found
        ]

    return WorkerSources(
        counters=parts.counters,
        readiness=parts_readiness(parts),
        channel_counters=notifier.channel_counters,
        channels=tuple(sorted(parts.channels)),
        outbox_depth=stage.pending,
        oldest_undelivered_ms=lambda: oldest_outbox_ms(stage),
        local_entries=lambda: local_rule_state(parts.runtimes),
        batch_times=getattr(parts, "batch_times", None),
        silences=silences,
    )


def local_rule_state(runtimes: Any) -> list[tuple[str, EngineState]]:
    """``(fingerprint, state)`` of the rule state this worker holds: the raw values of every
    owned partition of its changelog table (``ChangelogStore.partitions``, keys without their
    ``p<partition>|`` prefix), decoded on demand."""
    out: list[tuple[str, EngineState]] = []
    partitions = runtimes.table.store.partitions
    for partition in list(partitions):
        for key, value in list(partitions.get(partition, {}).items()):
            if value is None:
                continue
            try:
                out.append((key, decode_state(value)))
            except StateFormatError:
                continue
    return out


def oldest_outbox_ms(stage: Any) -> int | None:
    """Creation time of the oldest notification in the stage's outbox (``o:<id>`` entries of
    its log table), or None when empty or when another worker owns the stage."""
    if not getattr(stage, "active", False):
        return None
    oldest: int | None = None
    for key in list(stage.log):
        if not key.startswith("o:"):
            continue
        entry = stage.log.get(key)
        created = getattr(getattr(entry, "notification", None), "created_ms", None)
        if isinstance(created, int) and (oldest is None or created < oldest):
            oldest = created
    return oldest


def attach_ops(parts: Any, settings: PipelineSettings, alerting: Any = None) -> OpsServer | None:
    """Wire the history into the notifier and the dispatcher, run the ops server and the
    watchdog with the app.

    Args:
        parts: the built worker.
        settings: ``ops_*`` settings, bootstrap, app id.
        alerting: the loaded ``channels.yaml`` (silences file, watchdog), or None.

    Returns:
        The server (started with the app), or None when ``STREAMWARDEN_OPS_ENABLED`` is false
        (the history and the watchdog run either way).
    """
    app = parts.app
    history = HistoryWriter()
    parts.notifier.history = history.notification
    parts.stage.dispatcher.suppressions.listener = history.suppressed
    silences_file = getattr(alerting, "silences_file", None)

    async def publish(records: Sequence[tuple[bytes, bytes]]) -> object:
        producer = cast(BatchingProducer, app.producer)
        return await asyncio.gather(*await producer.send_batch(NOTIFICATIONS_TOPIC, 0, records))

    server = (
        OpsServer(settings, sources_of(parts, silences_file), history=history)
        if settings.ops_enabled
        else None
    )
    watchdog = _watchdog(parts, settings, alerting, server)

    topic = app.topic(
        NOTIFICATIONS_TOPIC,
        partitions=1,
        key_type=bytes,
        value_type=bytes,
        retention=HISTORY_RETENTION,
    )

    @app.task  # type: ignore[untyped-decorator]
    async def run_ops() -> None:
        if not settings.kafka_embedded:  # the embedded broker has it (topics.all_topics)
            await topic.maybe_declare()
        history.bind(publish)
        if server is not None:
            await server.start()
        beating = asyncio.create_task(watchdog.run()) if watchdog is not None else None
        try:
            await asyncio.Event().wait()  # until the app stops and cancels its tasks
        finally:
            if beating is not None:
                beating.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beating
            await history.close()
            if server is not None:
                await server.stop()

    return server


def _watchdog(
    parts: Any, settings: PipelineSettings, alerting: Any, server: OpsServer | None
) -> Watchdog | None:
    spec = getattr(getattr(alerting, "spec", None), "watchdog", None)
    if spec is None:
        return None

    def should_send() -> bool:
        """This worker owns the notification stage and is ready."""
        return bool(parts.stage.active) and (server is None or server.readiness()[0])

    return Watchdog(
        parts.notifier,
        spec.channel,
        spec.interval.total_seconds(),
        settings.app_id,
        should_send,
    )
