"""Deliver alert transitions to their channels through apprise.

apprise signals failure by its return value, never by exceptions: this module turns that into a
:class:`NotifyError` (retryable or permanent) and retries in exactly one place. Channel URLs are
never logged; channels are named.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from apprise.common import NotifyType
from apprise.result import AppriseResultStatus

from pipeline.errors import NotifyError
from pipeline.models import AlertTransition
from pipeline.notify.channels import Channel
from producers.envelope import now_ms

logger = logging.getLogger(__name__)

_RETRYABLE = {AppriseResultStatus.FAILURE, AppriseResultStatus.TIMEOUT, AppriseResultStatus.PARTIAL}


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently one notification is retried before it is reported undelivered."""

    attempts: int = 5
    initial_delay: float = 0.5
    max_delay: float = 30.0
    send_timeout: float = 30.0


class Delivery(msgspec.Struct, frozen=True):
    """One notification delivered to one channel (the ``--alerts-out`` line)."""

    delivered_at_ms: int
    channel: str
    fingerprint: str
    rule: str
    state: str
    entity: str
    source: str
    metric: str
    value: float | str
    severity: str
    ts_ms: int
    title: str
    body: str


def render_title(alert: AlertTransition) -> str:
    """Short subject line: state, severity, rule and entity."""
    return f"[{alert.state.upper()}] {alert.severity}: {alert.rule} on {alert.entity}"


def render_body(alert: AlertTransition) -> str:
    """Body: the rule's rendered summary and description, then the facts."""
    parts = [alert.summary, alert.description] if alert.description else [alert.summary]
    value = f"{alert.value:g}" if isinstance(alert.value, float | int) else alert.value
    parts.append(f"value={value} metric={alert.metric} source={alert.source} ts_ms={alert.ts_ms}")
    return "\n".join(p for p in parts if p)


def _notify_type(alert: AlertTransition) -> NotifyType:
    if alert.state == "resolved":
        return NotifyType.SUCCESS
    return NotifyType.FAILURE if alert.severity == "critical" else NotifyType.WARNING


class Notifier:
    """Sends alert transitions to named channels, with retries, and logs each delivery.

    Args:
        channels: loaded channels by name.
        alerts_out: when set, each delivered notification is appended as one JSON line.
        policy: retry policy.
    """

    def __init__(
        self,
        channels: Mapping[str, Channel],
        *,
        alerts_out: Path | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self._channels = dict(channels)
        self._alerts_out = alerts_out
        self._policy = policy or RetryPolicy()
        self._encoder = msgspec.json.Encoder()
        self.counters: dict[str, int] = {"sent": 0, "failed": 0, "retried": 0}

    async def deliver(self, alert: AlertTransition) -> list[Delivery]:
        """Deliver ``alert`` to each of its channels; returns the deliveries that succeeded.

        A channel that stays unreachable after every retry is logged as undelivered (by name,
        with the alert's fingerprint) and does not stop delivery to the others.
        """
        deliveries: list[Delivery] = []
        for name in alert.channels:
            try:
                deliveries.append(await self._deliver_with_retries(name, alert))
            except NotifyError as exc:
                self.counters["failed"] += 1
                logger.error(
                    "notification undelivered channel=%s fingerprint=%s rule=%s state=%s reason=%s",
                    exc.channel,
                    alert.fingerprint,
                    alert.rule,
                    alert.state,
                    exc.reason,
                )
        return deliveries

    async def _deliver_with_retries(self, name: str, alert: AlertTransition) -> Delivery:
        delay = self._policy.initial_delay
        for attempt in range(1, self._policy.attempts + 1):
            try:
                delivery = await self.send_once(name, alert)
            except NotifyError as exc:
                if not exc.retryable or attempt == self._policy.attempts:
                    raise
                self.counters["retried"] += 1
                logger.warning(
                    "notification retry channel=%s fingerprint=%s attempt=%d delay_s=%.1f "
                    "reason=%s",
                    name,
                    alert.fingerprint,
                    attempt,
                    delay,
                    exc.reason,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._policy.max_delay)
            else:
                return delivery
        raise AssertionError("unreachable")  # pragma: no cover

    async def send_once(self, name: str, alert: AlertTransition) -> Delivery:
        """One attempt to one channel.

        Raises:
            NotifyError: unknown channel (permanent) or apprise reported no delivery.
        """
        channel = self._channels.get(name)
        if channel is None:
            raise NotifyError(name, "no such channel is configured", retryable=False)
        title, body = render_title(alert), render_body(alert)
        result: Any = await channel.apprise.async_notify(
            body=body,
            title=title,
            notify_type=_notify_type(alert),
            timeout=self._policy.send_timeout,
        )
        if not result:
            status = getattr(result, "status", AppriseResultStatus.FAILURE)
            raise NotifyError(
                name,
                f"apprise reported {AppriseResultStatus(status).name.lower()}",
                retryable=status in _RETRYABLE,
            )
        self.counters["sent"] += 1
        delivery = Delivery(
            delivered_at_ms=now_ms(),
            channel=name,
            fingerprint=alert.fingerprint,
            rule=alert.rule,
            state=alert.state,
            entity=alert.entity,
            source=alert.source,
            metric=alert.metric,
            value=alert.value,
            severity=alert.severity,
            ts_ms=alert.ts_ms,
            title=title,
            body=body,
        )
        self._record(delivery)
        logger.info(
            "notification delivered channel=%s fingerprint=%s rule=%s state=%s entity=%s",
            name,
            alert.fingerprint,
            alert.rule,
            alert.state,
            alert.entity,
        )
        return delivery

    def _record(self, delivery: Delivery) -> None:
        if self._alerts_out is None:
            return
        with self._alerts_out.open("ab") as out:
            out.write(self._encoder.encode(delivery) + b"\n")
