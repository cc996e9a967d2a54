"""Build the faust app: broker, store, topic declaration policy. No autodiscovery, no web server.

The same code runs against real Kafka and the embedded broker; only two things differ, both
driven by settings: on the embedded broker topics are never declared (it cannot create them, so
``streamwarden`` creates them through the mock API first), and on real Kafka faust declares
them with the configured partitions and replication, compacting changelogs.
"""

from __future__ import annotations

from typing import Any

import faust

from pipeline.errors import ConfigError
from pipeline.fetch_wait import set_fetch_max_wait
from pipeline.settings import PipelineSettings

MAX_BATCH_BYTES = 256 * 1024
"""Largest produce batch (faust's producer and the normalize stage's)."""
MAX_FETCH_BYTES = 4 * 1024 * 1024
"""Largest fetch per partition (faust's consumer and the normalize stage's)."""


def build_app(settings: PipelineSettings) -> faust.App:
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
        "store": settings.store,
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
        # Batch produce requests: with linger 0 every send is its own request, and the worker
        # spends its time in Kafka round trips (measured: ~700 events/s).
        "producer_linger": settings.producer_linger_ms / 1000,
        "producer_max_batch_size": MAX_BATCH_BYTES,
        "broker_max_poll_records": 5000,
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": settings.heartbeat_interval_s,
        "broker_rebalance_timeout": settings.rebalance_timeout_s,
        "consumer_max_fetch_size": MAX_FETCH_BYTES,
    }
    app = faust.App(settings.app_id, **options)
    set_fetch_max_wait(app, settings.effective_fetch_max_wait_ms)
    return app
