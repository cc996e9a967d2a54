"""The worker's HTTP port: ``/metrics``, ``/healthz``, ``/readyz``, ``/api/*`` and the page.

aiohttp (faust's own dependency) on ``127.0.0.1`` by default. faust ships a web server too,
but it is built around its own views and a port per app; ours needs a handful of routes and
must be off-switchable without touching faust's settings, so a small aiohttp app it is.

A background task refreshes what comes from Kafka every ``refresh_s`` seconds: the cluster
view (alerts, history) and the consumer groups' lag. Requests never wait on Kafka; they
answer from the last refresh (``/readyz`` is not ready until the first one succeeded).

A port already in use is logged as an error and the worker runs on without its port: a
second worker on one host must not stop processing because of its health port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipeline.alerting.matchers import MatcherError, parse_matcher
from pipeline.ops import page
from pipeline.ops.alerts import StateFilter, select_alerts
from pipeline.ops.cluster import ClusterView, GroupStatus, LagProbe
from pipeline.ops.history import HistoryWriter, NotificationRecord
from pipeline.ops.metrics import WorkerCollector, new_registry, request_histogram
from pipeline.ops.readiness import Check, evaluate, lag_checks
from pipeline.ops.sources import WorkerSources
from pipeline.rules.duration import parse_duration
from pipeline.settings import PipelineSettings
from producers.httpserve import Served, serve

__all__ = ["OpsServer"]

logger = logging.getLogger(__name__)


@dataclass
class _Snapshot:
    groups: list[GroupStatus] | None = None
    error: str = ""
    refreshed_ms: int | None = None


class OpsServer:
    """The ops HTTP server of one worker.

    Args:
        settings: ``ops_*`` settings, bootstrap and app id.
        sources: the worker's providers.
        history: the notification history writer (recent records for the API), or None.
    """

    def __init__(
        self,
        settings: PipelineSettings,
        sources: WorkerSources,
        *,
        history: HistoryWriter | None = None,
    ) -> None:
        self.settings = settings
        self.sources = sources
        self.history = history
        self.view = ClusterView(
            settings, follow_state=settings.ops_follow_state, local_entries=sources.local_entries
        )
        self._probe = LagProbe(settings)
        self._refreshing = asyncio.Lock()
        self._snapshot = _Snapshot()
        self.registry = new_registry()
        self.registry.register(
            WorkerCollector(
                sources,
                readiness=self._ready_flags,
                groups=lambda: self._snapshot.groups or [],
                view=self.view,
                history=history,
            )
        )
        self._latency = request_histogram(self.registry)
        self._served: Served | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._view_started = False
        self.port: int | None = None
        """The bound port once started (None: not serving)."""

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the port and start refreshing; a bind failure is logged, not raised."""
        app = web.Application(middlewares=[self._timed])
        app.add_routes(
            [
                web.get("/", self._page),
                web.get("/metrics", self._metrics),
                web.get("/healthz", self._healthz),
                web.get("/readyz", self._readyz),
                web.get("/api/alerts", self._alerts),
                web.get("/api/silences", self._silences),
                web.get("/api/notifications", self._notifications),
                web.get("/api/status", self._status),
                web.get("/api/overview", self._overview),
            ]
        )
        self._served = await serve(
            app, self.settings.ops_host, self.settings.ops_port, f"worker {self.settings.app_id}"
        )
        self.port = self._served.port if self._served is not None else None
        self._refresher = asyncio.create_task(self._refresh_loop(), name="ops-refresh")

    @property
    def url(self) -> str:
        """The page's URL (``http://host:port/``), empty when not serving."""
        if self.port is None:
            return ""
        return f"http://{self.settings.ops_host}:{self.port}/"

    async def stop(self) -> None:
        """Stop serving and refreshing (idempotent)."""
        task, self._refresher = self._refresher, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        served, self._served = self._served, None
        if served is not None:
            await served.stop()
        await self.view.stop()
        await self._probe.close()
        self._view_started = False

    async def refresh(self) -> None:
        """Read Kafka once: the cluster view to its end and every stage group's lag (one
        refresh at a time: the background loop and a caller share the clients)."""
        async with self._refreshing:
            if not self._view_started:
                await self.view.start()
                self._view_started = True
            await self.view.refresh(read_timeout=max(self.settings.ops_refresh_s * 10, 10.0))
            groups = await self._probe.read()
            self._snapshot = _Snapshot(groups, "", int(time.time() * 1000))

    async def _refresh_loop(self) -> None:
        logged = ""
        while True:
            try:
                await self.refresh()
                logged = ""
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                self._snapshot = _Snapshot(self._snapshot.groups, error, None)
                if error != logged:  # once per distinct problem, not every refresh
                    logger.warning("ops view refresh failed error=%s", error)
                    logged = error
                if self._view_started:
                    with contextlib.suppress(Exception):
                        await self.view.stop()
                    self._view_started = False
            await asyncio.sleep(self.settings.ops_refresh_s)

    # --- readiness ----------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, Check]]:
        """The worker's checks plus the lag checks from the last refresh."""
        try:
            own = dict(self.sources.readiness())
        except Exception as exc:  # an adapter reading a half-started worker
            own = {"worker": {"ok": False, "detail": f"readiness unavailable: {exc}"}}
        own.update(lag_checks(self._snapshot.groups, self.settings.ops_ready_max_lag))
        if self._snapshot.error:
            own["kafka"] = {"ok": False, "detail": self._snapshot.error}
        return evaluate(own)

    def _ready_flags(self) -> tuple[bool, dict[str, bool]]:
        ready, checks = self.readiness()
        return ready, {name: bool(c["ok"]) for name, c in checks.items()}

    # --- handlers -----------------------------------------------------------------------------

    @web.middleware
    async def _timed(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            return await handler(request)
        finally:
            route = request.match_info.route.resource
            path = route.canonical if route is not None else "unmatched"
            self._latency.labels(path).observe(time.perf_counter() - started)

    async def _page(self, _request: web.Request) -> web.Response:
        return web.Response(text=page.HTML, content_type="text/html", charset="utf-8")

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        ready, checks = self.readiness()
        failing = {name: c for name, c in checks.items() if not c["ok"]}
        body = {"ready": ready, "checks": checks, "not_ready": sorted(failing)}
        return _json(body, status=200 if ready else 503)

    async def _alerts(self, request: web.Request) -> web.Response:
        try:
            return _json(self.alerts(request.query.getall("filter", []), request.query))
        except (MatcherError, ValueError) as exc:
            return _json({"error": str(exc)}, status=400)

    def alerts(self, filters: list[str], query: Any = None) -> list[Any]:
        matchers = [parse_matcher(f) for f in filters]
        state = (query or {}).get("state", "all")
        if state not in ("firing", "pending", "all"):
            raise ValueError(f"state must be firing, pending or all, not {state!r}")
        state_filter: StateFilter = state
        views = select_alerts(
            self.view.entries(), self.view.transitions, matchers=matchers, state=state_filter
        )
        return msgspec.to_builtins(views)  # type: ignore[no-any-return]

    async def _silences(self, _request: web.Request) -> web.Response:
        return _json(self.sources.silences())

    def notifications(self, since_ms: int) -> list[Any]:
        """History records since ``since_ms``: from Kafka, plus this worker's recent ones not
        read back yet (newest last)."""
        seen: dict[tuple[str, str, str, int], NotificationRecord] = {}
        recent = list(self.history.recent) if self.history is not None else []
        for record in [*self.view.history, *recent]:
            if record.at_ms >= since_ms:
                seen.setdefault((record.id, record.channel, record.outcome, record.at_ms), record)
        ordered = sorted(seen.values(), key=lambda r: r.at_ms)
        return msgspec.to_builtins(ordered)  # type: ignore[no-any-return]

    async def _notifications(self, request: web.Request) -> web.Response:
        try:
            since = parse_duration(request.query.get("since", "1h"))
        except Exception as exc:
            return _json({"error": str(exc)}, status=400)
        since_ms = int(time.time() * 1000) - int(since.total_seconds() * 1000)
        return _json(self.notifications(since_ms))

    def status(self) -> dict[str, Any]:
        groups = self._snapshot.groups or []
        channels = self.sources.channel_counters()
        return {
            "stages": [g.to_json() for g in groups],
            "channels": {
                name: channels.get(name, {})
                for name in sorted(set(self.sources.channels) | set(channels))
            },
            "counters": dict(self.sources.counters),
            "outbox_depth": self.sources.outbox_depth(),
            "refreshed_ms": self._snapshot.refreshed_ms,
            "error": self._snapshot.error,
        }

    async def _status(self, _request: web.Request) -> web.Response:
        return _json(self.status())

    async def _overview(self, _request: web.Request) -> web.Response:
        ready, checks = self.readiness()
        now = int(time.time() * 1000)
        return _json(
            {
                "now_ms": now,
                "ready": ready,
                "checks": checks,
                "alerts": self.alerts([]),
                "silences": self.sources.silences(),
                "notifications": self.notifications(now - 24 * 3_600_000)[-50:],
                "status": self.status(),
            }
        )


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(body), status=status, content_type="application/json"
    )
