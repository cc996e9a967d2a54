"""Build the faust app: broker, topic declaration policy, the runtime's settings. No autodiscovery.

The same code runs against real Kafka and the embedded broker; only two things differ, both
driven by settings: on the embedded broker topics are never declared (it cannot create them, so
``streamwarden`` creates them through the mock API first), and on real Kafka faust declares
them with the configured partitions and replication, compacting changelogs. The app is a
:class:`~pipeline.runtime.app.StreamWardenApp` (faust with the subclasses of
:mod:`pipeline.runtime`).
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import ConfigError
from pipeline.runtime.app import (
    MAX_BATCH_BYTES,
    MAX_FETCH_BYTES,
    StreamWardenApp,
    runtime_options,
)
from pipeline.settings import PipelineSettings

__all__ = ["MAX_BATCH_BYTES", "MAX_FETCH_BYTES", "build_app"]


def build_app(settings: PipelineSettings) -> StreamWardenApp:
    """A configured, agent-less faust app.

    Raises:
        ConfigError: ``STREAMWARDEN_KAFKA_BOOTSTRAP`` is not set.
    """
    if not settings.kafka_bootstrap.strip():
        raise ConfigError(
            "STREAMWARDEN_KAFKA_BOOTSTRAP is not set; set it to your Kafka bootstrap address "
            "(host:port), or run `streamwarden broker` for an embedded one"
        )
    options: dict[str, Any] = {
        "broker": settings.broker_url(),
        "store": "memory://",
        "autodiscover": False,
        "datadir": str(settings.data_dir),
        "web_enabled": False,
        "topic_allow_declare": not settings.kafka_embedded,
        # We use no on_leader timers; the leader topic would be one more topic to create.
        "topic_disable_leader": True,
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "key_serializer": "raw",
        "value_serializer": "raw",
        "producer_acks": -1,
        "consumer_auto_offset_reset": "earliest",
        "table_standby_replicas": 0,
        "broker_commit_every": 10_000,
        "broker_commit_interval": 1.0,
        "broker_session_timeout": settings.effective_session_timeout_s,
        "broker_heartbeat_interval": settings.effective_heartbeat_interval_s,
        "broker_rebalance_timeout": settings.rebalance_timeout_s,
        **runtime_options(linger_s=settings.producer_linger_ms / 1000),
    }
    app = StreamWardenApp(settings.app_id, **options)
    app.fetch_max_wait_ms = settings.effective_fetch_max_wait_ms
    return app
