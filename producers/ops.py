"""A producer's HTTP port: ``/metrics``, ``/healthz`` and ``/readyz``.

Never imports faust or :mod:`pipeline` (the producers' boundary). What is measured:

- frames and bytes received, dead letters by reason, the last frame's age: counted by
  :class:`MeteredSink`, which wraps the producer's sink (every frame passes through it);
- connections and reconnects: counted from the transports' own ``connected source=<name>``
  log records (:class:`ConnectionCounter`), so the transports stay untouched;
- buffer depth: the sink's ``buffered`` (envelopes not yet acknowledged by Kafka).

Settings (environment): ``STREAMWARDEN_PRODUCER_OPS_ENABLED`` (default true),
``STREAMWARDEN_PRODUCER_OPS_HOST`` (127.0.0.1), ``STREAMWARDEN_PRODUCER_OPS_PORT`` (9310; 0
picks a free one), ``STREAMWARDEN_PRODUCER_READY_MAX_FRAME_AGE_S`` (300: older last frame is
not ready). A port in use is logged and the producer streams on without it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from producers.envelope import RawEnvelope
from producers.httpserve import Served, serve
from producers.sink import EnvelopeSink

__all__ = ["ConnectionCounter", "MeteredSink", "ProducerOps", "ProducerOpsSettings"]


class ProducerOpsSettings(BaseSettings):
    """The producer's ops port settings (``STREAMWARDEN_PRODUCER_OPS_*``)."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMWARDEN_PRODUCER_", frozen=True, extra="ignore"
    )

    ops_enabled: bool = True
    ops_host: str = "127.0.0.1"
    ops_port: int = Field(default=9310, ge=0, le=65535)
    ready_max_frame_age_s: float = Field(default=300.0, gt=0)


class MeteredSink:
    """An :class:`~producers.sink.EnvelopeSink` that counts what passes through to ``inner``."""

    def __init__(self, inner: EnvelopeSink) -> None:
        self.inner = inner
        self.frames = 0
        self.bytes = 0
        self.last_frame_ms: int | None = None
        self.dead_letters: Counter[str] = Counter()

    async def send(self, key: bytes | None, envelope: RawEnvelope) -> None:
        self.frames += 1
        self.bytes += len(envelope.payload.encode())
        self.last_frame_ms = envelope.received_at_ms
        await self.inner.send(key, envelope)

    async def send_dead_letter(
        self,
        source: str,
        stream: str,
        reason: str,
        excerpt: str | bytes,
        *,
        received_at_ms: int | None = None,
    ) -> None:
        # The reason's first words name its kind; the rest may carry frame details.
        self.dead_letters[reason.split(":", 1)[0][:60]] += 1
        if received_at_ms is not None:
            self.last_frame_ms = received_at_ms
        await self.inner.send_dead_letter(
            source, stream, reason, excerpt, received_at_ms=received_at_ms
        )

    async def flush(self) -> None:
        await self.inner.flush()

    async def close(self) -> None:
        await self.inner.close()

    @property
    def buffered(self) -> int:
        """The inner sink's envelopes not yet acknowledged (0 when it does not say)."""
        return int(getattr(self.inner, "buffered", 0))


class ConnectionCounter(logging.Handler):
    """Counts the transports' ``connected source=<name>`` records of one source."""

    def __init__(self, source: str) -> None:
        super().__init__(logging.INFO)
        self.source = source
        self.connections = 0

    def emit(self, record: logging.LogRecord) -> None:
        if (
            isinstance(record.msg, str)
            and record.msg.startswith("connected source=")
            and isinstance(record.args, tuple)
            and record.args
            and record.args[0] == self.source
        ):
            self.connections += 1


class _Collector(Collector):
    def __init__(self, ops: ProducerOps) -> None:
        self._ops = ops

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        sink, name = self._ops.sink, self._ops.source
        labels = ["source"]
        for metric, help_text, value in (
            ("frames_received", "Frames received from the upstream", sink.frames),
            ("bytes_received", "Payload bytes received from the upstream", sink.bytes),
            (
                "connections",
                "Connections opened to the upstream",
                self._ops.connections.connections,
            ),
            (
                "reconnects",
                "Connections opened after the first",
                max(self._ops.connections.connections - 1, 0),
            ),
        ):
            family = CounterMetricFamily(
                f"streamwarden_producer_{metric}", help_text, labels=labels
            )
            family.add_metric([name], float(value))
            yield family
        dead = CounterMetricFamily(
            "streamwarden_producer_dead_letters",
            "Frames dead-lettered, by reason",
            labels=["source", "reason"],
        )
        for reason, count in sorted(sink.dead_letters.items()):
            dead.add_metric([name, reason], float(count))
        yield dead
        depth = GaugeMetricFamily(
            "streamwarden_producer_buffer_depth",
            "Envelopes not yet acknowledged by Kafka",
            labels=labels,
        )
        depth.add_metric([name], float(sink.buffered))
        yield depth
        age = GaugeMetricFamily(
            "streamwarden_producer_last_frame_age_seconds",
            "Seconds since the last frame (absent before the first)",
            labels=labels,
        )
        if sink.last_frame_ms is not None:
            age.add_metric([name], max(time.time() - sink.last_frame_ms / 1000, 0.0))
        yield age


class ProducerOps:
    """Metrics and health of one producer, and the HTTP server that shows them.

    Args:
        source: the source's configured name.
        sink: the sink to wrap (use :attr:`sink` from then on).
        settings: ops settings; read from the environment when omitted.
    """

    def __init__(
        self, source: str, sink: EnvelopeSink, settings: ProducerOpsSettings | None = None
    ) -> None:
        self.source = source
        self.settings = settings or ProducerOpsSettings()
        self.sink = MeteredSink(sink)
        self.connections = ConnectionCounter(source)
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(self))
        self._served: Served | None = None
        self.port: int | None = None

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when a frame arrived within the bound and the sink has not failed."""
        last = self.sink.last_frame_ms
        age = None if last is None else max(time.time() - last / 1000, 0.0)
        bound = self.settings.ready_max_frame_age_s
        failure = getattr(self.sink.inner, "_failure", None)
        checks = {
            "frames": {
                "ok": age is not None and age <= bound,
                "detail": "no frame yet"
                if age is None
                else f"last frame {age:.1f}s ago, max {bound:g}s",
            },
            "sink": {
                "ok": failure is None,
                "detail": "delivering" if failure is None else f"failed: {type(failure).__name__}",
            },
        }
        return all(c["ok"] for c in checks.values()), checks

    async def start(self) -> None:
        """Count connections, and serve the port unless disabled (a bind failure is logged)."""
        logging.getLogger("producers.transports").addHandler(self.connections)
        if not self.settings.ops_enabled:
            return
        app = web.Application()
        app.add_routes(
            [
                web.get("/metrics", self._metrics),
                web.get("/healthz", self._healthz),
                web.get("/readyz", self._readyz),
            ]
        )
        self._served = await serve(
            app, self.settings.ops_host, self.settings.ops_port, f"source={self.source}"
        )
        self.port = self._served.port if self._served is not None else None

    async def run(self, source: Any, stop: Any) -> None:
        """:func:`producers.runner.run_source` into :attr:`sink`, serving the port meanwhile."""
        from producers.runner import run_source

        await self.start()
        try:
            await run_source(source, self.sink, stop)
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Stop serving and counting (idempotent)."""
        logging.getLogger("producers.transports").removeHandler(self.connections)
        served, self._served = self._served, None
        if served is not None:
            await served.stop()

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "source": self.source})

    async def _readyz(self, _request: web.Request) -> web.Response:
        ready, checks = self.readiness()
        failing = sorted(name for name, c in checks.items() if not c["ok"])
        return web.json_response(
            {"ready": ready, "checks": checks, "not_ready": failing}, status=200 if ready else 503
        )


async def run_with_ops(
    source: Any,
    sink: EnvelopeSink,
    stop: Any,
    settings: ProducerOpsSettings | None = None,
) -> None:
    """:func:`producers.runner.run_source` with the source's ops port up around it."""
    await ProducerOps(source.name, sink, settings).run(source, stop)
