"""Worker settings, read once from ``STREAMWARDEN_*`` environment variables.

Frozen so nothing can change them behind the app's back after start-up.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

KAFKA_SESSION_TIMEOUT_S = 6.0
"""Session timeout on real Kafka: the lowest a broker accepts by default (its
``group.min.session.timeout.ms`` is 6000; a JoinGroup asking for less is refused with
INVALID_SESSION_TIMEOUT). A broker evicts a silent member when its session runs out, and the
survivors' next heartbeat starts a rebalance that ends as soon as they have all rejoined, so a
takeover there costs about the session timeout plus a heartbeat interval, under 10 s (from
the protocol; not measured against a real broker)."""

EMBEDDED_SESSION_TIMEOUT_S = 3.0
"""Session timeout on the embedded broker (librdkafka's mock cluster, ``rdkafka_mock_cgrp.c``),
whose group coordinator is slower than a real one in two ways: it looks for expired sessions
once a second, and after evicting a member it waits ``session timeout - 1 s`` before ending the
join round, however soon the survivors rejoin. A takeover there costs about twice the session
timeout. In chaos ``worker-takeover`` (2026-12-03, a 2-core machine shared with other runs)
notifications resumed a median 12.3 s after the kill with 6 s and 6.2 s with 3 s (14.2 s,
8.7 s with 4 s, and 6.2 s when the kill fell inside a join round). The mock enforces no
minimum. Margin against evicting a live but busy worker: a heartbeat may come up to the
session timeout less one heartbeat interval late (2.25 s here; the mock adds up to 1 s more,
as it looks once a second), i.e. an event loop blocked that long (the faust group's
heartbeats run on its consumer thread's own loop, the normalize group's on the main loop). No
live worker was evicted in the chaos runs of 2026-12-03 (71 worker logs). An eviction costs a
rebalance, never a record."""

HEARTBEATS_PER_SESSION = 4
"""Default heartbeat interval: this many per session timeout (Kafka advises at most a third)."""


class PipelineSettings(BaseSettings):
    """Everything the worker reads from its environment.

    Attributes:
        kafka_bootstrap: ``host:port[,host:port]`` of Kafka (real or embedded).
        kafka_embedded: the bootstrap is StreamWarden's embedded broker, which cannot create
            topics; topics are then created through the mock API and never declared by faust.
        partitions: partition count of every StreamWarden topic (must match for changelogs).
        replication_factor: replication of topics the worker declares on real Kafka.
        app_id: faust app id; changelog topic names derive from it, so it is persisted API.
        rules_path: rule file or folder of ``*.yaml`` rule files.
        channels_file: YAML file naming notification channels; None uses the built-in
            ``console`` channel only.
        alerts_out: append each delivered notification as one JSON line to this file.
        data_dir: faust's data directory (table stores, offsets of RocksDB).
        log_level: Python logging level name.
        batch_max: most events an agent takes in one batch.
        batch_within: seconds an agent waits to fill a batch; bounds added latency per hop.
        producer_linger_ms: how long the Kafka producer waits to fill a batch (latency per hop
            against fewer, larger produce requests).
        canonical_linger_ms: the same for the normalize stage's canonical records. Longer by
            default: the stage writes a small message per partition per batch, and the rule
            stage's consumer then reads them one record batch per partition per fetch on the
            embedded broker; at a steady 3,000 frames/s 20 ms took the alert latency from
            p50 1.2-5 s to 0.13-1 s (5 ms before). The stage does not wait on it: its
            acknowledgements are awaited while it works on the next batch.
        session_timeout_s: how long a silent worker keeps its partitions; after a crash, the
            others take them over after this long (faust's default of 60 s is too slow for
            alerting). None: :data:`KAFKA_SESSION_TIMEOUT_S` on real Kafka,
            :data:`EMBEDDED_SESSION_TIMEOUT_S` on the embedded broker (see both for why).
            Applies to both consumer groups of the worker (faust's and the normalize stage's).
        heartbeat_interval_s: consumer heartbeat period; None: a quarter of the session
            timeout, so a worker may miss three heartbeats before it is evicted.
        rebalance_timeout_s: how long a rebalance may take before members are dropped.
        fetch_max_wait_ms: longest a fetch may wait for data; None: 20 ms on the embedded
            broker (which often holds a fetch for the whole wait), 500 ms on real Kafka (which
            answers as soon as data arrives). See :mod:`pipeline.runtime.consumer`.
        ops_enabled: serve the ops port (``/metrics``, ``/healthz``, ``/readyz``, the API and
            the page); see :mod:`pipeline.ops`.
        ops_host, ops_port: where; port 0 picks a free one (logged). Loopback by default.
        ops_ready_max_lag: a stage whose group lags more records than this is not ready.
        ops_refresh_s: how often the ops view re-reads Kafka (alert state, history, lag).
        ops_follow_state: the ops view reads every rule state write of the cluster (pending
            alerts of every worker on the page) instead of firing alerts from ``alerts.v1``
            plus this worker's own state; costs a decode per state write.
    """

    model_config = SettingsConfigDict(env_prefix="STREAMWARDEN_", frozen=True, extra="ignore")

    kafka_bootstrap: str = Field(default="")
    kafka_embedded: bool = False
    partitions: int = Field(default=8, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1)
    app_id: str = "streamwarden"
    rules_path: Path = Path("rules")
    channels_file: Path | None = None
    alerts_out: Path | None = None
    data_dir: Path = Path(".streamwarden")
    log_level: str = "INFO"
    batch_max: int = Field(default=1000, ge=1)
    batch_within: float = Field(default=0.02, gt=0)
    producer_linger_ms: int = Field(default=5, ge=0, le=1000)
    canonical_linger_ms: int = Field(default=20, ge=0, le=1000)
    session_timeout_s: float | None = Field(default=None, gt=0)
    heartbeat_interval_s: float | None = Field(default=None, gt=0)
    rebalance_timeout_s: float = Field(default=60.0, gt=0)
    fetch_max_wait_ms: int | None = Field(default=None, ge=1, le=60_000)
    ops_enabled: bool = True
    ops_host: str = "127.0.0.1"
    ops_port: int = Field(default=9300, ge=0, le=65535)
    ops_ready_max_lag: int = Field(default=1000, ge=0)
    ops_refresh_s: float = Field(default=2.0, gt=0)
    ops_follow_state: bool = False

    @property
    def effective_fetch_max_wait_ms(self) -> int:
        """:attr:`fetch_max_wait_ms`, or its default for the kind of broker."""
        if self.fetch_max_wait_ms is not None:
            return self.fetch_max_wait_ms
        return 20 if self.kafka_embedded else 500

    @property
    def effective_session_timeout_s(self) -> float:
        """:attr:`session_timeout_s`, or its default for the kind of broker."""
        if self.session_timeout_s is not None:
            return self.session_timeout_s
        return EMBEDDED_SESSION_TIMEOUT_S if self.kafka_embedded else KAFKA_SESSION_TIMEOUT_S

    @property
    def effective_heartbeat_interval_s(self) -> float:
        """:attr:`heartbeat_interval_s`, or a quarter of the effective session timeout."""
        if self.heartbeat_interval_s is not None:
            return self.heartbeat_interval_s
        return self.effective_session_timeout_s / HEARTBEATS_PER_SESSION

    def broker_url(self) -> str:
        """faust broker URL (``kafka://h1:p1;h2:p2``) from the comma-separated bootstrap list."""
        hosts = [h.strip() for h in self.kafka_bootstrap.split(",") if h.strip()]
        return ";".join(f"kafka://{h}" for h in hosts)
